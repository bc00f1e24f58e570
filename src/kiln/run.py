"""`kiln run`: curate -> tokenizer -> tokenize -> train -> eval -> samples -> report, in one run directory."""

from __future__ import annotations

import json
import time
from typing import Any

from kiln import stages
from kiln.evaluate.verbs import sample_checkpoint
from kiln.report import plot_loss, write_report
from kiln.runconfig import RunConfig
from kiln.rundir import RunDir
from kiln.train.checkpoint import latest_checkpoint


def main(cfg: RunConfig, run: RunDir, resume: bool = False) -> dict[str, Any]:
    """The whole chain; returns the summary written to summary.json."""
    t0 = time.perf_counter()
    stages.prepare(cfg, run, resume)
    budget_s = stages.training_budget_s(cfg, run, elapsed_s=time.perf_counter() - t0)
    trained = stages.train(
        cfg, run, resume=resume and latest_checkpoint(run.checkpoints) is not None, time_budget_s=budget_s
    )
    newest = latest_checkpoint(run.checkpoints)
    assert newest is not None, "training ends with a checkpoint"
    samples = sample_checkpoint(newest, None, device_name=cfg.train.device)
    plot_loss(run)
    recorded = json.loads(run.stages.read_text())
    summary = {
        "preset": cfg.preset,
        "family": cfg.model.family,
        "model": trained["model"],
        **{k: v for k, v in trained.items() if k.startswith("val_")},
        "train_tokens": trained["train_tokens"],
        "params": trained["params"],
        "params_non_embedding": trained["params_non_embedding"],
        "tokens_per_s": trained["tokens_per_s"],
        "mfu": trained["mfu"],
        "wall_s": time.perf_counter() - t0,
        "train_s": trained["train_s"],
        "steps": trained["steps"],
        "epochs": trained["epochs"],
        "val_bytes_per_token": recorded.get("tokenizer", {}).get("val_bytes_per_token"),
        "tokenize_mb_per_s": recorded.get("tokenize", {}).get("mb_per_s"),
        "device": trained["device"],
        "precision": trained["precision"],
        "precision_reason": trained["precision_reason"],
        "budget_s": cfg.budget_s or None,
        "plan": trained["plan"],
    }
    write_report(run, summary, recorded, samples, cfg)
    vals = ", ".join(f"{k} {v:.4f}" for k, v in summary.items() if k.startswith("val_") and v is not None)
    print(
        f"done in {summary['wall_s']:.0f} s: {summary['model']}, {summary['precision']}, {vals}, "
        f"{summary['tokens_per_s']:,.0f} tokens/s, MFU {summary['mfu']:.1%} -> {run.report}"
    )
    return summary
