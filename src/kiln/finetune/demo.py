"""`kiln transfer-demo`: does pretraining help, does DPO add to SFT, does LoRA match full fine-tuning?

From a pretrained checkpoint (or, without one, the default `kiln run` first), on the sets of
finetune/demo_sets.py, the demonstration fine-tunes, each through `kiln finetune`'s config and the
one trainer, then measures every model on the same held-out items:

    base            the pretrained model as it is (the chat template, no fine-tuning)
    sft             full SFT from the pretrained weights
    sft-random      full SFT of the same architecture from random weights
    lora            LoRA SFT (rank 8) from the pretrained weights
    sft+dpo         DPO (full) from the SFT model, on the preference pairs
    classify        the century of a held-out passage, head + full fine-tuning, pretrained
    classify-random the same from random weights

It writes `report.md` (the table) and `results.json` under its run directory; each model's own
run directory sits beside them. A finished run is kept when the demonstration is run again. Its run
directory is a new or empty folder, marked as the demonstration's (MARK) before anything is written
there; anything it would train over that it did not make is refused first.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from kiln.device import pick_device
from kiln.errors import KilnError
from kiln.rundir import RunDir
from kiln.staging import STAGED, remove_path, rename_synced, write_whole
from kiln.verbs import Verb

SFT_STEPS = 150
DPO_STEPS = 60
CLASSIFY_STEPS = 150
MICRO_BATCH = 8
MARK = "kiln_transfer_demo.json"
"""In the demonstration's --run-dir, written before anything else: the folder is the demonstration's
to write in (only a new or empty folder gets it)."""
SPEC = "demo_spec.json"
"""What a run was made from (its plan entry, start and rate): kept on a rerun only when unchanged."""
PRETRAINED_LR = 0.1
"""Full fine-tuning from pretrained weights at the pretraining rate x this (`kiln finetune`'s default);
random starts and LoRA at the pretraining rate (measured: one rate for all leaves the pretrained
classifier at 48.9 % instead of 70.5 %)."""


def plan(steps_scale: float) -> list[dict[str, Any]]:
    """The fine-tuning runs, in order (sft+dpo starts from sft's result)."""

    def steps(n: int) -> int:
        return max(4, int(n * steps_scale))

    return [
        {
            "name": "sft",
            "method": "sft",
            "data": "sft",
            "init": "checkpoint",
            "steps": steps(SFT_STEPS),
            "lr_factor": PRETRAINED_LR,
        },
        {"name": "sft-random", "method": "sft", "data": "sft", "init": "random", "steps": steps(SFT_STEPS)},
        {"name": "lora", "method": "lora", "data": "sft", "init": "checkpoint", "steps": steps(SFT_STEPS)},
        {
            "name": "sft+dpo",
            "method": "dpo",
            "data": "dpo",
            "init": "sft",
            "steps": steps(DPO_STEPS),
            "lr_factor": PRETRAINED_LR,
        },
        {
            "name": "classify",
            "method": "classify",
            "data": "classify",
            "init": "checkpoint",
            "steps": steps(CLASSIFY_STEPS),
            "lr_factor": PRETRAINED_LR,
        },
        {
            "name": "classify-random",
            "method": "classify",
            "data": "classify",
            "init": "random",
            "steps": steps(CLASSIFY_STEPS),
        },
    ]


def _finished(run: RunDir, spec: dict[str, Any]) -> Path | None:
    """The final checkpoint of a finished run made from the same spec, else None."""
    from kiln.train.checkpoint import latest_checkpoint

    last = latest_checkpoint(run.checkpoints)
    made = run.root / SPEC
    same = made.exists() and json.loads(made.read_text()) == spec
    done = same and last is not None and last.name == f"step_{spec['steps']}" and run.stages.exists()
    return last if done and (run.root / "wall_s.txt").exists() else None


def _ours(run: RunDir) -> bool:
    """Whether `run` is absent or empty (False), or a run the demonstration made (True); refused otherwise."""
    if not run.root.exists() or not any(run.root.iterdir()):
        return False
    if run.root.is_symlink() or not (run.root / SPEC).is_file():
        raise KilnError(
            f"{run.root} exists and was not made by kiln transfer-demo (no {SPEC}); move it away or "
            "choose another --run-dir"
        )
    return True


def _replace(run: RunDir, new: RunDir) -> None:
    """Put the finished run `new` in the place of `run` (an earlier one of the demonstration's, if any).
    Each step can be repeated: a kill between two is finished by the next demonstration."""
    dropped = run.root.with_name(f".dropped-{run.root.name}")
    remove_path(dropped)  # what a kill left of the last replacement (a hidden name only the demonstration makes)
    if run.root.exists():
        os.replace(run.root, dropped)
    rename_synced(new.root, run.root)
    remove_path(dropped)


def _train(spec: dict[str, Any], start: Path, sets: dict[str, Path], run: RunDir) -> None:
    """Train the run `spec` plans from the checkpoint `start` into the new folder `run`."""
    from kiln import stages
    from kiln.finetune.verb import finetune_config, prepare_run

    held = sets.get(spec["data"] + "_val")
    overrides: dict[str, Any] = {
        "train.max_steps": spec["steps"],
        "train.micro_batch_size": MICRO_BATCH,
        "train.eval_every": max(spec["steps"] // 3, 1),
        "train.checkpoint_every": spec["steps"],
        "train.warmup_steps": max(spec["steps"] // 10, 1),
        "train.lr": spec["lr"],
    }
    if held is not None:
        overrides["finetune.val_data"] = str(held)
    init = "random" if spec["init"] == "random" else "checkpoint"
    cfg = finetune_config(start, sets[spec["data"]], spec["method"], overrides, init)
    run.root.mkdir(parents=True, exist_ok=True)
    write_whole(run.root / SPEC, json.dumps(spec, indent=2) + "\n")  # made by the demonstration
    prepare_run(cfg, start, run)
    print(f"\n== {spec['name']}: {spec['method']} from {'random weights' if init == 'random' else start} ==")
    t0 = time.perf_counter()
    stages.train(cfg, run)
    write_whole(run.root / "wall_s.txt", f"{time.perf_counter() - t0:.1f}\n")


def finetune_run(spec: dict[str, Any], start: Path, sets: dict[str, Path], out: Path, lr: float) -> dict[str, Any]:
    """One fine-tuning run of the plan (kept if already finished) at learning rate `lr` x the plan's
    factor; its figures and final checkpoint."""
    from kiln.finetune.classify import classification_report

    final = RunDir(out / spec["name"])
    spec = {**spec, "start": str(start), "lr": lr * spec.get("lr_factor", 1.0)}
    last = _finished(final, spec)
    if last is None:  # trained beside the run it replaces (a finished one of another plan stays until then)
        _ours(final)
        run = RunDir(out / f"{STAGED}{spec['name']}")
        if _finished(run, spec) is None:  # (a finished one was killed before it was moved in)
            remove_path(run.root)  # an unfinished one a crash left, perhaps without its SPEC by then
            _train(spec, start, sets, run)
            assert _finished(run, spec) is not None, f"{run.root} ended without its final checkpoint"
        _replace(final, run)
        last = _finished(final, spec)
        assert last is not None, f"{final.root} lost its final checkpoint when moved in"
    run = final
    summary = json.loads(run.stages.read_text())["train"]
    figures: dict[str, Any] = {
        "name": spec["name"],
        "checkpoint": str(last),
        "steps": summary["steps"],
        "wall_s": float((run.root / "wall_s.txt").read_text()),
        "trainable_params": summary["trainable_params"],
        "val_loss": summary["val_loss"],
    }
    for key in ("val_preference_accuracy", "val_reward_margin", "val_accuracy"):
        if key in summary:
            figures[key] = summary[key]
    if spec["method"] == "classify":
        report = classification_report(last, run.root)
        figures.update(accuracy=report["accuracy"], majority=report["majority_baseline"], items=report["items"])
    return figures


def question_accuracy(checkpoint: Path, device_name: str = "auto") -> dict[str, float]:
    """Held-out multiple-choice accuracy on the questions (demo_sets.heldout_tasks) of a checkpoint."""
    from kiln.evaluate.load import load_checkpoint
    from kiln.evaluate.tasks import score_task
    from kiln.finetune.demo_sets import heldout_tasks
    from kiln.models.registry import family

    loaded = load_checkpoint(checkpoint, pick_device(device_name))
    spec = family(loaded.cfg.model.family)

    def encode(t: str) -> list[int]:
        return loaded.tokenizer.encode(t, add_special_tokens=False).ids

    out = {}
    for task in heldout_tasks():
        max_len = loaded.cfg.model.max_seq_len
        scored = score_task(task, spec, loaded.model, encode, loaded.ids, loaded.precision, max_len, progress=False)
        out[task.name] = scored["acc"]
        out[task.name + "_chance"] = scored["chance"]
        out["items"] = scored["items"]
    return out


def pretrained_checkpoint(out: Path) -> Path:
    """The default `kiln run` in out/pretrain (kept if already finished); its final checkpoint."""
    from kiln import presets
    from kiln import run as run_pipeline
    from kiln.train.checkpoint import latest_checkpoint

    run = RunDir(out / "pretrain")
    if not (run.summary.exists() and latest_checkpoint(run.checkpoints)):
        print("== pretraining: the default `kiln run` ==")
        run_pipeline.main(presets.cpu(), run, resume=latest_checkpoint(run.checkpoints) is not None)
    last = latest_checkpoint(run.checkpoints)
    assert last is not None
    return last


def _unmarked_demo(out: Path) -> bool:
    """A demonstration's folder from before MARK: only its names, and a fine-tuning run of its own
    (with SPEC) among them."""
    names = {"data", "pretrain", "results.json", "report.md", *(spec["name"] for spec in plan(1.0))}
    entries = list(out.iterdir()) if out.is_dir() and not out.is_symlink() else []
    runs = [p for p in entries if p.name in names - {"data", "pretrain"} and p.is_dir() and not p.is_symlink()]
    return bool(entries) and all(p.name in names for p in entries) and any((p / SPEC).is_file() for p in runs)


def check_run_dir(out: Path, pretraining: bool) -> None:
    """Refuse, before anything is written, a --run-dir the demonstration did not make (a new or empty
    folder, or one holding its MARK, is fine), and in its own folder any run it would train over that
    it did not make (no SPEC; pretrain/ not a kiln run)."""
    marked = out.is_dir() and not out.is_symlink() and (out / MARK).is_file() and not (out / MARK).is_symlink()
    if out.exists() and not marked and not _unmarked_demo(out) and (not out.is_dir() or any(out.iterdir())):
        raise KilnError(
            f"--run-dir {out} holds files kiln transfer-demo did not write (no {MARK}); pass a new or empty "
            "folder, or an earlier demonstration's"
        )
    for spec in plan(1.0):
        _ours(RunDir(out / spec["name"]))
    if pretraining:
        RunDir(out / "pretrain").check_ours()


def run_demo(out: Path, checkpoint: Path | None = None, steps_scale: float = 1.0) -> dict[str, Any]:
    """The whole demonstration; returns (and writes) its results."""
    from kiln.config import from_dict
    from kiln.finetune.demo_sets import write_sets
    from kiln.runconfig import RunConfig
    from kiln.train.checkpoint import read_config

    out = Path(out)
    t0 = time.perf_counter()
    check_run_dir(out, pretraining=checkpoint is None)
    if checkpoint is not None and not (Path(checkpoint) / "model.safetensors").exists():
        raise KilnError(f"{checkpoint} is not a kiln checkpoint; pass a checkpoints/step_N directory")
    out.mkdir(parents=True, exist_ok=True)
    write_whole(out / MARK, json.dumps({"kiln": "transfer-demo"}) + "\n")
    start = Path(checkpoint) if checkpoint is not None else pretrained_checkpoint(out)
    sets = write_sets(out / "data")
    lr = from_dict(RunConfig, read_config(start)).train.lr
    results: dict[str, Any] = {"pretrained": str(start), "lr": lr, "runs": {}}
    results["runs"]["base"] = {"name": "base", "steps": 0, "wall_s": 0.0, **question_accuracy(start)}
    for spec in plan(steps_scale):
        begin = Path(results["runs"]["sft"]["checkpoint"]) if spec["init"] == "sft" else start
        figures = finetune_run(spec, begin, sets, out, lr)
        if spec["method"] != "classify":
            figures.update(question_accuracy(Path(figures["checkpoint"])))
        results["runs"][spec["name"]] = figures
    results["wall_s"] = time.perf_counter() - t0
    results["sets"] = {name: sum(1 for _ in path.open()) for name, path in sets.items()}
    write_whole(out / "results.json", json.dumps(results, indent=2) + "\n")
    write_whole(out / "report.md", report(results))
    print(report(results))
    return results


def report(results: dict[str, Any]) -> str:
    runs, sets = results["runs"], results["sets"]
    base = runs["base"]
    lines = [
        "# Transfer demonstration",
        "",
        f"Pretrained checkpoint: `{results['pretrained']}`. Sets (finetune/demo_sets.py): "
        f"{sets['sft']} instruction pairs ({sets['sft_val']} held out), {sets['dpo']} preference pairs, "
        f"{sets['classify']} labelled passages ({sets['classify_val']} held out); held-out items come "
        f"from a quarter of the addresses, never fine-tuned on.",
        "",
        f"Held-out questions ({base['items']} years each), multiple choice scored by log-likelihood after "
        f"the chat template: who gave the address (chance {base['heldout_president_chance']:.1%}), "
        f"which party (chance {base['heldout_party_chance']:.1%}).",
        "",
        "| model | from | trainable parameters | steps | wall s | who: accuracy | party: accuracy | held-out loss "
        "| other |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    origin = {"base": "pretrained", "sft-random": "random", "classify-random": "random", "sft+dpo": "sft"}
    for name, r in runs.items():
        if name.startswith("classify"):
            continue
        other = ""
        if "val_preference_accuracy" in r:
            other = f"preference acc. {r['val_preference_accuracy']:.1%}, margin {r['val_reward_margin']:.2f}"
        loss = f"{r['val_loss']:.3f}" if "val_loss" in r else "-"
        trainable = f"{r['trainable_params']:,}" if "trainable_params" in r else "-"
        lines.append(
            f"| {name} | {origin.get(name, 'pretrained')} | {trainable} | {r['steps']} | {r['wall_s']:.0f} | "
            f"{r['heldout_president']:.1%} | {r['heldout_party']:.1%} | {loss} | {other} |"
        )
    lines += [
        "",
        "Century of a held-out passage (4 labels; head on the <|eos|> state, every weight trained):",
        "",
        "| model | from | steps | wall s | accuracy | majority label | held-out loss |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("classify", "classify-random"):
        r = runs[name]
        lines.append(
            f"| {name} | {origin.get(name, 'pretrained')} | {r['steps']} | {r['wall_s']:.0f} | "
            f"{r['accuracy']:.1%} | {r['majority']:.1%} | {r['val_loss']:.3f} |"
        )
    lines += [
        "",
        f"Learning rates: {results['lr']:g} (the pretraining rate) for random starts and LoRA, x{PRETRAINED_LR:g} for "
        "full fine-tuning and DPO from trained weights. Held-out loss: answer tokens (SFT), DPO loss (sft+dpo), "
        f"cross-entropy (classify). With {base['items']} items per question an accuracy moves "
        f"{100 / base['items']:.1f} points per item.",
        "",
        f"Total {results['wall_s']:.0f} s.",
    ]
    return "\n".join(lines) + "\n"


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, default=Path("runs/transfer"), help="where its runs and report go")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="the pretrained checkpoint (default: the default `kiln run` first, in RUN_DIR/pretrain)",
    )
    parser.add_argument(
        "--steps-scale", type=float, default=1.0, help="scale every fine-tuning run's steps (a quick look: 0.1)"
    )


VERB = Verb(
    "transfer-demo",
    "the transfer demonstration: pretrained vs random init, SFT vs SFT + DPO, LoRA vs full, held out",
    _arguments,
    lambda args: run_demo(args.run_dir, args.checkpoint, args.steps_scale),
)
