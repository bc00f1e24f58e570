"""Every model family at equal training compute budget on the built-in corpus, on this machine.

    python benchmarks/compare_families.py                    # 120 steps each (~1M tokens), cpu-sized models
    python benchmarks/compare_families.py --steps 40 --presets cpu,cpu_hybrid

Curates and tokenizes the built-in corpus once (the `cpu` preset's data settings), then trains each
family's preset for the same number of steps of the same batch (the same training tokens), and
prints one JSON line per family and a Markdown table: parameters (total and active per token),
validation loss (each family's own objective, so losses compare only within a row's kind),
bits-per-byte where the model is a causal LM, masked accuracy / pseudo-perplexity for the encoder,
target accuracy for the encoder-decoder, tokens/s, MFU and wall time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from kiln import stages
from kiln.config import apply_overrides
from kiln.presets import get_preset
from kiln.rundir import RunDir

PRESETS = "cpu,cpu_moe,cpu_hybrid,cpu_encoder,cpu_t5"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default=PRESETS, help="comma-separated presets to train")
    ap.add_argument("--steps", type=int, default=120, help="optimizer steps per family (same batch for all)")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "kiln-families"), help="working folder")
    args = ap.parse_args()
    work = Path(args.work)
    shared = RunDir(work / "data")
    stages.prepare(get_preset("cpu"), shared, resume=True)  # once; later runs reuse it
    rows = []
    for name in args.presets.split(","):
        run = RunDir(work / name)
        shutil.rmtree(run.root, ignore_errors=True)
        shutil.copytree(shared.root, run.root, ignore=shutil.ignore_patterns("checkpoints", "metrics.jsonl"))
        cfg = apply_overrides(
            get_preset(name),
            {
                "train.max_steps": str(args.steps),
                "budget_s": "0",  # equal tokens for every family, not a time budget
                "train.size_from_budget": "false",
                "train.eval_every": "0",
                "train.checkpoint_every": "0",
                "train.warmup_steps": "20",
            },
        )
        t0 = time.perf_counter()
        out = stages.train(cfg, run)
        row = {
            "preset": name,
            "family": cfg.model.family,
            "params_M": round(out["params"] / 1e6, 2),
            "active_matmul_params_M": round(out["active_matmul_params"] / 1e6, 2),
            "train_tokens": out["train_tokens"],
            **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in out.items() if k.startswith("val_")},
            "tokens_per_s": round(out["tokens_per_s"]),
            "mfu": round(out["mfu"], 3),
            "wall_s": round(time.perf_counter() - t0, 1),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(
        "\n| preset | family | params (M) | active matmul (M) | val loss | val bpb | other | tokens/s | MFU | wall s |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        other = ", ".join(
            f"{k[4:]} {v}" for k, v in r.items() if k.startswith("val_") and k not in ("val_loss", "val_bpb")
        )
        bpb = r.get("val_bpb")
        print(
            f"| {r['preset']} | {r['family']} | {r['params_M']} | {r['active_matmul_params_M']} | {r['val_loss']} | "
            f"{bpb if bpb is not None else '-'} | {other or '-'} | {r['tokens_per_s']:,} | {r['mfu']:.1%} "
            f"| {r['wall_s']} |"
        )


if __name__ == "__main__":
    main()
