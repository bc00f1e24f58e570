"""Training throughput, MFU against this machine's measured matmul ceiling, and where a step's time goes.

    python benchmarks/train_throughput.py                    # the cpu preset, in the precision kiln picks here
    python benchmarks/train_throughput.py --breakdown        # + a profiled step split by kind, matmuls by shape
    python benchmarks/train_throughput.py --preset gpt2_small --steps 20 --breakdown   # on a GPU

Runs the trainer's own optimizer step (`Trainer.train_step`: the objective's loss, accumulation,
clipping, the optimizer) on the preset's model (at its planned depth, or `--set model.depth=N`), fed
random tokens (a step's time does not depend on the data), compiled when train.compile is on, and
prints tokens/s, achieved FLOP/s and MFU. The ceiling is measured twice: square 1024 x 1024 products,
and the products the model really multiplies (each (M, K) x (K, N) shape the step ran); MFU is stated
against the larger.

With --breakdown, a few more steps run under torch.profiler and the step's time is split into data,
matmuls (forward and backward), attention, the loss (cross-entropy over the vocabulary, the soft-cap),
norms and other elementwise work, a compiled step's fused kernels (by the pass they run in), the
optimizer (Newton-Schulz's matmuls apart), clipping, and the time in no operator at all (Python and
dispatch); each matmul shape gets its achieved FLOP/s against the ceiling measured at that shape
(one operand set, hot in cache) and the rate of the same product cycling through enough operand sets
that each is read from memory ("cold": a step's products mostly read operands that other work has
pushed out of cache, though one the previous op just wrote may still be there).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from collections import defaultdict
from typing import Any

import torch

from kiln.config import apply_overrides
from kiln.device import keep_freed_host_memory, pick_device
from kiln.models.build import build_model
from kiln.models.registry import build_objective
from kiln.presets import get_preset
from kiln.tokenizer import SpecialIds
from kiln.train.optim import make_optimizer
from kiln.train.parallel import Parallel, parallelize
from kiln.train.precision import choose_precision, measure_matmul_peak
from kiln.train.probe import RandomTokens
from kiln.train.trainer import Trainer

SCOPES = ("data", "forward", "backward", "clip", "optimizer")
"""The trainer's record_function scopes (train/trainer.py)."""
COMPILED_KERNEL = re.compile(r"(graph_\d+_)?(cpp_fused|triton_)")
"""inductor's generated kernels: on a CPU named graph_N_cpp_fused_... (recorded only with
torch._inductor.config.cpp.enable_kernel_profile, which --breakdown sets), on a GPU triton_..."""
MATMUL_OPS = {"aten::mm", "aten::addmm", "aten::bmm", "aten::_addmm_activation"}
KINDS = (
    ("attention", ("scaled_dot_product", "flash_attention", "_efficient_attention", "cudnn_attention")),
    ("loss", ("cross_entropy", "log_softmax", "nll_loss", "logsumexp", "tanh")),
    ("norm", ("rms_norm", "layer_norm", "rsqrt")),
)


def special_ids(vocab_size: int) -> SpecialIds:
    """Special ids for an objective fed random text tokens (the first few ids)."""
    return SpecialIds(0, 1, 2, 3, 8, 10, 9, (4, 5, 6, 7), num_special=16, vocab_size=vocab_size)


def build(preset: str, precision: str, overrides: dict[str, str]) -> Trainer:
    cfg = apply_overrides(get_preset(preset), {**overrides, "train.precision": precision})
    tc = cfg.train
    device = pick_device(tc.device)
    if device.type == "cpu":
        keep_freed_host_memory()  # as train/build.py does
    if tc.threads:
        torch.set_num_threads(tc.threads)
    par = Parallel(cfg.parallel, device)
    torch.manual_seed(0)
    model = build_model(cfg.model, device)
    forward_model = parallelize(model, par, precision)
    ids = special_ids(cfg.model.vocab_size)
    loader = RandomTokens(cfg.model.vocab_size, tc.micro_batch_size, tc.seq_len, low=ids.num_special)
    optimizer = make_optimizer(model, cfg, device)
    trainer = Trainer(
        cfg,
        model,
        forward_model,
        build_objective(cfg.model, cfg.objective, ids),
        loader,
        optimizer,
        par,
        device,
        hooks=[],
    )
    if tc.compile:
        trainer.step_model = torch.compile(forward_model)
    return trainer


def timed_steps(trainer: Trainer, steps: int) -> float:
    """Seconds per step over `steps` steps."""
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    sync()
    return (time.perf_counter() - t0) / steps


def matmul_flops(name: str, shapes: list[list[int]]) -> float:
    """FLOPs of one matmul op from its recorded input shapes."""
    if name == "aten::bmm":
        (b, m, k), (_, _, n) = shapes[0], shapes[1]
        return 2.0 * b * m * k * n
    a, b = (shapes[1], shapes[2]) if name in ("aten::addmm", "aten::_addmm_activation") else (shapes[0], shapes[1])
    return 2.0 * a[0] * a[1] * b[1]


def shape_ceiling(
    shapes: tuple, name: str, device: torch.device, dtype: torch.dtype, seconds: float = 0.3, cold: bool = False
) -> float:
    """The best FLOP/s this machine reaches on one product of these shapes, in `dtype`: with one
    operand set multiplied again and again (operands hot in cache), or with `cold`, cycling through as
    many input sets as fill ~256 MB (at most 64; one where a set's inputs are that large already), so
    each product reads its inputs from memory, as most of a training step's products do."""
    if name == "aten::bmm":
        (bsz, m, k), (_, _, n) = shapes[0], shapes[1]
        x, w = (bsz, m, k), (bsz, k, n)
    else:
        x, w = (shapes[1], shapes[2]) if name != "aten::mm" else (shapes[0], shapes[1])
    inputs = (math.prod(x) + math.prod(w)) * torch.finfo(dtype).bits // 8  # the output buffer is reused
    sets = max(1, min(64, (256 << 20) // inputs)) if cold else 1
    pairs = [
        (torch.randn(*x, device=device, dtype=dtype), torch.randn(*w, device=device, dtype=dtype)) for _ in range(sets)
    ]
    flops = matmul_flops("aten::bmm" if len(x) == 3 else "aten::mm", [list(x), list(w)]) * sets
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for a, b in pairs:
        torch.matmul(a, b)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        sync()
        t0 = time.perf_counter()
        for a, b in pairs:
            torch.matmul(a, b)
        sync()
        best = max(best, flops / max(time.perf_counter() - t0, 1e-9))
    return best


def kind_of(name: str, scope: str) -> str:
    if scope in ("data", "clip"):
        return scope
    if COMPILED_KERNEL.match(name):
        return f"compiled fused kernels ({scope})"
    if scope == "optimizer":
        return "optimizer: Newton-Schulz matmuls" if name in MATMUL_OPS else "optimizer: the rest"
    if name in MATMUL_OPS:
        return f"matmuls ({scope})"
    for kind, keys in KINDS:
        if any(k in name for k in keys):
            return kind
    return "elementwise and other"


def breakdown(trainer: Trainer, steps: int, dtype: torch.dtype) -> dict[str, Any]:
    """A profiled run of `steps` steps: seconds per step by kind, and per matmul shape its rate."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if trainer.device.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=activities, record_shapes=True) as prof:
        for _ in range(steps):
            trainer.train_step()
    wall = (time.perf_counter() - t0) / steps
    # On a GPU an operator's time is its kernels' time (launches are asynchronous); on a CPU, its own.
    on_gpu = trainer.device.type == "cuda"
    # On a GPU the backward pass launches from autograd's device thread, so every thread counts; on a CPU
    # only the training thread's operators do (the rest is the profiler's own and idle pool threads).
    events = [e for e in prof.events() if e.device_type == DeviceType.CPU]
    if not on_gpu:
        main_thread = min(e.thread for e in events)
        events = [e for e in events if e.thread == main_thread]
    scopes = [(e.name, e.time_range.start, e.time_range.end) for e in events if e.name in SCOPES]
    seconds: dict[str, float] = defaultdict(float)
    shapes: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
    in_ops = 0.0
    by_op: dict[str, float] = defaultdict(float)
    for e in events:
        compiled = bool(COMPILED_KERNEL.match(e.name)) or e.name.startswith(("mkldnn::", "torch_ops"))
        if not (e.name.startswith("aten::") or compiled) or e.name in SCOPES:
            continue
        scope = next((n for n, a, b in scopes if a <= e.time_range.start and e.time_range.end <= b), "other")
        self_s = (e.self_device_time_total if on_gpu else e.self_cpu_time_total) / 1e6
        in_ops += self_s
        by_op[e.name] += self_s / steps
        seconds[kind_of(e.name, scope)] += self_s / steps
        if e.name in MATMUL_OPS and e.input_shapes and scope != "optimizer":
            key = (e.name, tuple(tuple(s) for s in e.input_shapes if s))
            shapes[key][0] += self_s
            shapes[key][1] += matmul_flops(e.name, [list(s) for s in key[1]])
            shapes[key][2] += 1
    seconds["no operator (Python, dispatch, autograd)"] = max(0.0, wall - in_ops / steps)
    rows = []
    for (name, shape), (spent, flops, count) in sorted(shapes.items(), key=lambda kv: -kv[1][0]):
        cold = shape_ceiling(shape, name, trainer.device, dtype, cold=True)
        # the best rate seen at this shape: a hot run slowed by the VM's neighbours read below the cold
        # one (198 against 322 GFLOP/s on a Zen 4), which no cache explains
        ceiling = max(shape_ceiling(shape, name, trainer.device, dtype), cold)
        rows.append(
            {
                "op": name,
                "shapes": [list(s) for s in shape],
                "calls_per_step": count / steps,
                "s_per_step": spent / steps,
                "achieved_gflops": flops / spent / 1e9,
                "ceiling_gflops": ceiling / 1e9,
                "cold_gflops": cold / 1e9,
            }
        )
    top = dict(sorted(by_op.items(), key=lambda kv: -kv[1])[:15])
    return {"profiled_step_s": wall, "seconds": dict(seconds), "matmuls": rows, "top_ops": top}


def measure(
    preset: str, precision: str, steps: int, warmup: int, overrides: dict[str, str], profile_steps: int
) -> dict[str, Any]:
    trainer = build(preset, precision, overrides)
    for _ in range(warmup):
        trainer.train_step()
    step_s = timed_steps(trainer, steps)
    tok_s = trainer.tokens_per_step / step_s
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    square = measure_matmul_peak(trainer.device, dtype, seconds=1.0)
    out: dict[str, Any] = {
        "preset": preset,
        "precision": precision,
        "device": str(trainer.device),
        "model": f"{trainer.cfg.model.num_layers} x {trainer.cfg.model.dim}",
        "params": trainer.model.num_params(),
        "tokens_per_step": trainer.tokens_per_step,
        "step_s": step_s,
        "tokens_per_s": tok_s,
        "achieved_tflops": trainer.flops_per_token * tok_s / 1e12,
        "ceiling_square_tflops": square / 1e12,
    }
    ceiling = square
    if profile_steps:
        out["breakdown"] = breakdown(trainer, profile_steps, dtype)
        shaped = max((r["ceiling_gflops"] * 1e9 for r in out["breakdown"]["matmuls"]), default=0.0)
        out["ceiling_model_shapes_tflops"] = shaped / 1e12
        ceiling = max(square, shaped)
    out["mfu"] = trainer.flops_per_token * tok_s / ceiling
    return out


def print_breakdown(r: dict[str, Any]) -> None:
    b = r["breakdown"]
    profiled, plain = b["profiled_step_s"] * 1000, r["step_s"] * 1000
    print(f"\n{r['precision']}: a step, profiled ({profiled:.0f} ms; unprofiled {plain:.0f} ms)")
    total = sum(b["seconds"].values())
    for kind, s in sorted(b["seconds"].items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<42}{s * 1000:>9.1f} ms {s / total:>7.1%}")
    print(f"  {'matmul shape':<52}{'calls':>6}{'ms/step':>9}{'GFLOP/s':>10}{'ceiling':>10}{'ratio':>7}{'cold':>8}")
    for m in b["matmuls"][:12]:
        shape = " x ".join("(" + ", ".join(map(str, s)) + ")" for s in m["shapes"])
        print(
            f"  {m['op'][6:] + ' ' + shape:<52}{m['calls_per_step']:>6.0f}{m['s_per_step'] * 1000:>9.1f}"
            f"{m['achieved_gflops']:>10.0f}{m['ceiling_gflops']:>10.0f}"
            f"{m['achieved_gflops'] / m['ceiling_gflops']:>7.0%}{m['cold_gflops']:>8.0f}"
        )
    # The most this step's MFU could be: its matmuls at their own shapes' ceilings, nothing else timed
    at_ceiling = sum(m["achieved_gflops"] * m["s_per_step"] / m["ceiling_gflops"] for m in b["matmuls"])
    ceiling = max(r["ceiling_square_tflops"], r.get("ceiling_model_shapes_tflops", 0.0)) * 1e12
    bound = r["achieved_tflops"] * 1e12 * r["step_s"] / max(at_ceiling, 1e-9) / ceiling
    print(
        f"  the step's matmuls at their shapes' ceilings would take {at_ceiling * 1000:.0f} ms: with attention,"
        f" the optimizer and the rest free, MFU could reach {bound:.0%} of the larger ceiling"
    )
    # ... and at the rate of the same products reading their operands from memory (cold), as a step's do
    at_cold = sum(m["achieved_gflops"] * m["s_per_step"] / m["cold_gflops"] for m in b["matmuls"])
    print(
        f"  at the cold rates (operands cycled through memory: column 'cold') they would take"
        f" {at_cold * 1000:.0f} ms: with the rest free, MFU could reach"
        f" {r['achieved_tflops'] * 1e12 * r['step_s'] / max(at_cold, 1e-9) / ceiling:.0%} of the larger ceiling"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing (compilation, allocation)")
    parser.add_argument("--breakdown", action="store_true", help="profile a few more steps: where the time goes")
    parser.add_argument("--profile-steps", type=int, default=3)
    parser.add_argument(
        "--precision",
        nargs="+",
        default=None,
        help="precisions to measure (default: the one `train.precision auto` picks here)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        help="config override key=value (repeatable), e.g. --set model.depth=4 --set train.compile=true",
    )
    args = parser.parse_args()
    overrides = {"train.size_from_budget": "false", **dict(o.split("=", 1) for o in args.overrides)}
    if args.precision is None:
        args.precision = [choose_precision("auto", pick_device(get_preset(args.preset).train.device)).precision]
    profile_steps = args.profile_steps if args.breakdown else 0
    if args.breakdown:  # inductor's CPU kernels then show in the profile (before anything compiles)
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True
    rows = [measure(args.preset, p, args.steps, args.warmup, overrides, profile_steps) for p in args.precision]
    heads = ("tokens/s", "TFLOP/s", "1024^2 ceiling", "shapes ceiling", "MFU")
    print(f"{'precision':<10}{'model':>10}" + "".join(f"{h:>{w}}" for h, w in zip(heads, (11, 9, 15, 15, 7))))
    for r in rows:
        shaped = r.get("ceiling_model_shapes_tflops")
        print(
            f"{r['precision']:<10}{r['model']:>10}{r['tokens_per_s']:>11,.0f}{r['achieved_tflops']:>9.3f}"
            f"{r['ceiling_square_tflops']:>15.3f}{(f'{shaped:.3f}' if shaped else '-'):>15}{r['mfu']:>7.1%}"
        )
    for r in rows:
        if "breakdown" in r:
            print_breakdown(r)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
