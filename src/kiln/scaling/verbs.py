"""`kiln plan` (compute-optimal size and tokens for a budget) and `kiln sweep` (a grid of runs and the
law fitted to them)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from kiln.config import apply_overrides, load_config
from kiln.errors import KilnError
from kiln.runconfig import RunConfig
from kiln.rundir import RunDir
from kiln.verbs import Verb, config_options, overrides


def _plan_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--flops", type=float, default=0.0, help="the budget in training FLOPs")
    parser.add_argument("--gpu-hours", type=float, default=0.0, help="the budget in device-hours")
    parser.add_argument("--hours", type=float, default=0.0, help="the budget in wall-clock hours on --gpus devices")
    parser.add_argument(
        "--device", default="h100", help="h100, h200, a100, l4 (data-sheet peak and power) or cpu (measured now)"
    )
    parser.add_argument("--gpus", type=int, default=1, help="devices training together")
    parser.add_argument("--mfu", type=float, default=0.0, help="model FLOPs utilisation (default 0.4 GPU, 0.5 CPU)")
    parser.add_argument("--seq-len", type=int, default=2048, help="training context")
    parser.add_argument("--vocab-size", type=int, default=8192, help="tokenizer vocabulary")
    parser.add_argument("--parallel", choices=["ddp", "fsdp"], default="fsdp", help="for memory per device")
    parser.add_argument("--price-per-hour", type=float, default=0.0, help="cost of one device-hour, for the cost")
    parser.add_argument(
        "--run-dir", type=Path, default=None, help="a run directory: its corpus's tokens and kiln's own fit"
    )
    parser.add_argument("--emit-config", type=Path, default=None, help="write the planned shape as a config file")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON instead of a table")


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    from kiln.scaling.plan import budget_of, emit_config, make_plan, plan_table

    for name in ("flops", "gpu_hours", "hours", "mfu", "price_per_hour"):
        value = getattr(args, name)
        if not math.isfinite(value) or value < 0:
            raise KilnError(f"--{name.replace('_', '-')} {value}: expected a finite number >= 0")
    if args.gpus < 1 or args.seq_len < 1 or args.vocab_size < 1:
        raise KilnError("--gpus, --seq-len and --vocab-size must be at least 1")
    budget = budget_of(args.flops, args.gpu_hours, args.hours, args.device, args.gpus, args.mfu)
    plan = make_plan(
        budget, args.vocab_size, args.seq_len, args.run_dir, args.parallel, price_per_hour=args.price_per_hour
    )
    print(json.dumps(plan, indent=2) if args.json else plan_table(plan), end="\n" if args.json else "")
    if args.emit_config:
        print(f"wrote {emit_config(plan, args.emit_config)}; train it with kiln train --config {args.emit_config}")
    return plan


PLAN = Verb(
    "plan",
    "compute-optimal parameters and tokens for a budget (published fits, kiln's own), the shape, time, memory",
    _plan_arguments,
    _plan,
)


def numbers(text: str) -> list[float]:
    """'1,2,3' -> [1.0, 2.0, 3.0], or one line naming the list that is not."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise KilnError(f"{text!r} is not a comma-separated list of numbers") from None


def _sweep_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run-dir", type=Path, required=True, help="a tokenized run directory (its shards, config)")
    parser.add_argument("--depths", required=True, help="depths on the size dial, e.g. 1,2,3,4,5")
    parser.add_argument("--tokens", required=True, help="training tokens per point, e.g. 1.5e5,4e5")
    parser.add_argument("--lrs", default="", help="learning rates (default: the run config's train.lr)")
    parser.add_argument("--aspects", default="", help="widths per layer on the dial (dim = aspect x depth)")
    parser.add_argument(
        "--mup-base-dims", default="", help="0 (standard) and/or muP base widths, e.g. 0,64: the lr transfer"
    )
    parser.add_argument(
        "--executor",
        choices=["local", "inline", "debug", "slurm", "auto"],
        default="local",
        help="submitit's LocalExecutor (default), SlurmExecutor, AutoExecutor or DebugExecutor; inline: here",
    )
    parser.add_argument("--jobs", type=int, default=1, help="points at a time on this machine (cores are shared)")
    parser.add_argument("--no-fit", action="store_true", help="collect and plot only")
    config_options(parser)


def _sweep(args: argparse.Namespace) -> dict[str, Any]:
    from kiln.scaling.sweep import grid, sweep

    run = RunDir(args.run_dir)
    if not run.config.exists():
        raise KilnError(f"{run.root} has no config.json; run `kiln tokenize --run-dir {run.root}` first")
    base = apply_overrides(load_config(RunConfig, run.config), overrides(args))  # every point starts from it
    lrs = numbers(args.lrs) or [base.train.lr]
    aspects = [int(a) for a in numbers(args.aspects)] or [0]
    mups = [int(m) for m in numbers(args.mup_base_dims)] or [0]
    points = grid([int(d) for d in numbers(args.depths)], numbers(args.tokens), lrs, aspects, mups)
    result = sweep(run, points, args.executor, args.jobs, fit=not args.no_fit, base=base)
    print((run.root / "scaling" / "sweep.md").read_text())
    return result


SWEEP = Verb(
    "sweep",
    "a grid of runs (depths x token budgets x learning rates) on a run's shards; table, plot, fitted law",
    _sweep_arguments,
    _sweep,
)
