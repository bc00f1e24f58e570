"""What data parallelism and checkpoints cost on this machine.

    python benchmarks/distributed_cost.py                 # cpu preset, 2 processes for ddp/fsdp
    python benchmarks/distributed_cost.py --steps 20 --procs 2

1. Training throughput of the `cpu` preset in one process (parallel.mode none) and in `--procs`
   processes under torchrun with DDP and FSDP2 (gloo on CPU, NCCL on GPU), at the same global batch.
   Reported: tokens/s and the ratio to one process. On a CPU the processes share the same cores
   (torchrun gives each one thread), so the ratio shows the communication and framework overhead.
2. Checkpoint save and load time against model size: decoders of growing width, model + AdamW
   state through kiln's DCP checkpoint (with the consolidated safetensors and the checksum manifest).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from kiln import stages
from kiln.config import apply_overrides
from kiln.models.build import build_model
from kiln.presets import get_preset
from kiln.rundir import RunDir
from kiln.train.checkpoint import load_training_state, save_checkpoint
from kiln.train.optim import build_optimizer


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def throughput(run: RunDir, mode: str, procs: int, steps: int) -> float:
    launch = (
        [sys.executable, "-m", "kiln"]
        if procs == 1
        else [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(procs),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_port()),
            "-m",
            "kiln",
        ]
    )
    args = [
        "train",
        "--run-dir",
        str(run.root),
        "--preset",
        "cpu",
        "--overwrite",
        "--parallel.mode",
        mode,
        "--train.max_steps",
        str(steps),
        "--budget_s",
        "0",  # the fixed steps, not the cpu preset's time budget
        "--train.size_from_budget",
        "false",
        "--train.eval_every",
        "0",
        "--train.checkpoint_every",
        "0",
        "--train.global_batch_size",
        "32",
        "--train.micro_batch_size",
        str(32 // procs),
    ]
    subprocess.run([*launch, *args], check=True, capture_output=True)
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    rates = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r][2:]  # after warm-up
    return sorted(rates)[len(rates) // 2]


def checkpoint_times(work: Path) -> list[dict]:
    out = []
    tokenizer = work / "tok.json"
    tokenizer.write_text("{}")
    for dim, layers in ((256, 4), (512, 8), (768, 12)):
        cfg = apply_overrides(
            get_preset("cpu"),
            {
                "model.dim": str(dim),
                "model.num_layers": str(layers),
                "model.num_heads": str(dim // 64),
                "model.num_kv_heads": str(dim // 64),
            },
        )
        model = build_model(cfg.model, torch.device("cpu"))
        opt = build_optimizer(model, 1e-3, 0.1, (0.9, 0.95), torch.device("cpu"))
        model(torch.zeros(1, 8, dtype=torch.long)).sum().backward()
        opt.step()
        root = work / f"ckpt_{dim}"
        t0 = time.perf_counter()
        path = save_checkpoint(root, 1, model, opt, {}, {}, tokenizer, keep=1)
        save_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        load_training_state(path, model, opt)
        load_s = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
        params = sum(p.numel() for p in model.parameters()) / 1e6
        out.append(
            {
                "params_M": round(params, 1),
                "checkpoint_MB": round(size),
                "save_s": round(save_s, 2),
                "load_s": round(load_s, 2),
                "save_MB_per_s": round(size / save_s),
            }
        )
        print(json.dumps(out[-1]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "kiln-distributed"))
    args = ap.parse_args()
    work = Path(args.work)
    data = RunDir(work / "data")
    stages.prepare(get_preset("cpu"), data, resume=True)  # once; later runs reuse it
    rates = {"none": throughput(data, "none", 1, args.steps)}
    print(json.dumps({"mode": "none", "procs": 1, "tokens_per_s": round(rates["none"])}), flush=True)
    for mode in ("ddp", "fsdp"):
        rates[mode] = throughput(data, mode, args.procs, args.steps)
        print(
            json.dumps(
                {
                    "mode": mode,
                    "procs": args.procs,
                    "tokens_per_s": round(rates[mode]),
                    "ratio_to_one_process": round(rates[mode] / rates["none"], 3),
                }
            ),
            flush=True,
        )
    checkpoint_times(work)


if __name__ == "__main__":
    main()
