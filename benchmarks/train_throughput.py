"""Training throughput and MFU against this machine's own measured matmul peak, fp32 and bf16.

    python benchmarks/train_throughput.py                 # the cpu preset
    python benchmarks/train_throughput.py --preset gpt2_small --steps 20   # on a GPU

Runs the trainer's own optimizer steps (train_step: accumulation, clipping, step skipping) on the
preset's model, fed random tokens (throughput does not depend on the data), and prints, per
precision: tokens/s, achieved FLOP/s and MFU = achieved / measured peak.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from kiln.config import apply_overrides
from kiln.device import keep_freed_host_memory, pick_device
from kiln.models.build import build_model
from kiln.objectives.base import Batch, text_batch
from kiln.objectives.causal import CausalLM
from kiln.presets import get_preset
from kiln.train.optim import build_optimizer
from kiln.train.parallel import Parallel, parallelize
from kiln.train.precision import choose_precision, measure_matmul_peak
from kiln.train.trainer import Trainer


class RandomTokens:
    """A loader of random token windows: throughput does not depend on the data."""

    epoch = 0.0

    def __init__(self, vocab_size: int, batch_size: int, seq_len: int, seed: int = 0) -> None:
        self.shape, self.vocab_size = (batch_size, seq_len + 1), vocab_size
        self.gen = torch.Generator().manual_seed(seed)

    def next_batch(self) -> Batch:
        data = torch.randint(0, self.vocab_size, self.shape, generator=self.gen)
        return text_batch(data[:, :-1], data[:, 1:])

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def measure(preset: str, precision: str, steps: int, warmup: int, overrides: dict[str, str]) -> dict:
    """The trainer's own step (accumulation, clipping, step skipping) on the preset's model."""
    cfg = apply_overrides(get_preset(preset), {**overrides, "train.precision": precision})
    tc = cfg.train
    device = pick_device(tc.device)
    if device.type == "cpu":
        keep_freed_host_memory()  # as train/build.py does
    par = Parallel(cfg.parallel, device)
    torch.manual_seed(0)
    model = build_model(cfg.model, device)
    forward_model = parallelize(model, par, precision)
    forward_model = torch.compile(forward_model) if tc.compile else forward_model
    optimizer = build_optimizer(model, tc.lr, tc.weight_decay, (tc.beta1, tc.beta2), device)
    loader = RandomTokens(cfg.model.vocab_size, tc.micro_batch_size, tc.seq_len)
    trainer = Trainer(
        cfg, model, forward_model, CausalLM(cfg.objective.causal), loader, optimizer, par, device, hooks=[]
    )
    for _ in range(warmup):
        trainer.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    tok_s = steps * trainer.tokens_per_step / (time.perf_counter() - t0)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    peak = measure_matmul_peak(device, dtype, seconds=1.0)
    flops = trainer.flops_per_token * tok_s
    return {
        "preset": preset,
        "precision": precision,
        "device": str(device),
        "params": model.num_params(),
        "tokens_per_s": tok_s,
        "achieved_tflops": flops / 1e12,
        "peak_tflops": peak / 1e12,
        "mfu": flops / peak,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument(
        "--precision",
        nargs="+",
        default=None,
        help="precisions to measure (default: fp32, and bf16 where its matmuls measure faster here; "
        "bf16 on an AVX2-only CPU runs ~100x slower)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override key=value (repeatable), e.g. --set train.micro_batch_size=16",
    )
    args = parser.parse_args()
    overrides = dict(o.split("=", 1) for o in args.overrides)
    if args.precision is None:
        fast_bf16 = choose_precision("auto", pick_device(get_preset(args.preset).train.device)).precision == "bf16"
        args.precision = ["fp32", "bf16"] if fast_bf16 else ["fp32"]
    rows = [measure(args.preset, p, args.steps, args.warmup, overrides) for p in args.precision]
    print(f"{'precision':<10}{'tokens/s':>12}{'TFLOP/s':>10}{'peak TFLOP/s':>14}{'MFU':>8}")
    for r in rows:
        print(
            f"{r['precision']:<10}{r['tokens_per_s']:>12,.0f}{r['achieved_tflops']:>10.3f}{r['peak_tflops']:>14.3f}"
            f"{r['mfu']:>8.1%}"
        )
    if len(rows) == 2:
        print(f"bf16 / fp32 speed-up: {rows[1]['tokens_per_s'] / rows[0]['tokens_per_s']:.2f}x")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
