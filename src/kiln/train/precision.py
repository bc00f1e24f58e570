"""Measured matmul rates: the precision choice (`train.precision auto`) and the MFU ceiling.

Machines differ by two orders of magnitude in bf16: CPUs with AMX or AVX512-BF16 multiply bf16
faster than fp32, while an AVX2-only CPU emulates it far slower (docs/benchmarks.md has the figures).
Nothing here assumes either: every figure is a short measurement on the device at hand.

Both measurements walk a ladder of square matmul sizes, starting small and doubling only while one
product takes a small fraction of the time allowed, so their cost is bounded by the time allowed
whatever the hardware (a single 2048 bf16 product takes many seconds on an AVX2-only CPU; the ladder
never gets there). Both check a stop flag between products, so SIGTERM is honoured within one product.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

Stop = Callable[[], bool]

LADDER_SAMPLES = 3
"""Product pairs timed at each size of the precision probe before it grows (the fastest counts)."""


def _never() -> bool:
    return False


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ladder(
    device: torch.device,
    dtypes: tuple[torch.dtype, ...],
    seconds: float,
    max_size: int,
    samples: int = 1,
    stop: Stop = _never,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[int, dict[torch.dtype, float]]:
    """Best achieved FLOP/s of square (n x n) @ (n x n) products in each of `dtypes` at each size n
    tried, within about `seconds` of `clock`: sizes double from 128 (1024 on CUDA), after at least
    `samples` products of each dtype, while `samples` more of each at the next size (8x this size's
    fastest) fit in the time left; the rest of the time repeats the largest size. The dtypes' products
    alternate, so a stretch of load from another process slows them alike. Under such load a small
    product's time is mostly waiting for the cores, so the ladder climbs on what is left of the time,
    not on one product's share of it (at 128 x 128 a reading of 0.5 GFLOP/s was once the ceiling)."""
    start = clock()
    deadline = start + seconds
    size = 1024 if device.type == "cuda" else 128
    rates: dict[int, dict[torch.dtype, float]] = {}
    while not stop():
        pairs = {}
        for dtype in dtypes:
            pairs[dtype] = (torch.randn(size, size, device=device, dtype=dtype),) * 2
            pairs[dtype][0] @ pairs[dtype][1]  # first call: kernel selection, allocation
        _sync(device)
        fastest, timed = dict.fromkeys(dtypes, math.inf), 0
        while True:
            for dtype, (a, b) in pairs.items():
                t0 = clock()
                a @ b
                _sync(device)
                fastest[dtype] = min(fastest[dtype], max(clock() - t0, 1e-9))
            timed += 1
            next_size = 8 * sum(fastest.values()) * samples  # the next size's products at this size's rate
            grow = size * 2 <= max_size and clock() - start + next_size <= seconds
            if grow and timed >= samples or stop() or clock() >= deadline:
                break
        rates[size] = {dtype: 2 * size**3 / t for dtype, t in fastest.items()}
        if not grow or clock() >= deadline:
            break
        size *= 2
    return rates


def matmul_ladder(
    device: torch.device,
    dtype: torch.dtype,
    seconds: float,
    max_size: int,
    stop: Stop = _never,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[int, float]:
    """`ladder` of one dtype, one product a size before it grows: the best FLOP/s at each size."""
    return {size: rates[dtype] for size, rates in ladder(device, (dtype,), seconds, max_size, 1, stop, clock).items()}


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 1.0, stop: Stop = _never) -> float:
    """The MFU ceiling: the best FLOP/s square matmuls reach here in `dtype`, in about `seconds`
    (0.0 when stopped before the first product finished)."""
    max_size = 8192 if device.type == "cuda" else 4096
    return max(matmul_ladder(device, dtype, seconds, max_size, stop).values(), default=0.0)


def measure_shape_peak(
    device: torch.device,
    dtype: torch.dtype,
    shapes: list[tuple[int, int, int]],
    seconds: float = 1.0,
    stop: Stop = _never,
    clock: Callable[[], float] = time.perf_counter,
) -> float:
    """The best FLOP/s any of the (M, K) x (K, N) products in `shapes` reaches here in `dtype` (the
    products a model really multiplies), about `seconds` in all, split between them."""
    best = 0.0
    for m, k, n in shapes:
        if stop():
            break
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        a @ b  # kernel selection, allocation
        deadline = clock() + seconds / max(1, len(shapes))
        while not stop():
            _sync(device)
            t0 = clock()
            a @ b
            _sync(device)
            best = max(best, 2.0 * m * k * n / max(clock() - t0, 1e-9))
            if clock() >= deadline:
                break
    return best


@dataclass(frozen=True)
class MatmulRates:
    """FLOP/s of fp32 and bf16 products of the same size on one device."""

    fp32: float
    bf16: float
    size: int

    @property
    def bf16_speedup(self) -> float:
        return self.bf16 / self.fp32


@functools.cache
def probe_matmul_rates(device_key: str, seconds: float = 0.3) -> MatmulRates:
    """fp32 and bf16 matmul rates on `device_key` ("cpu", "cuda:0"); about `seconds` in all, once per
    process (`compare_matmul_rates`)."""
    return compare_matmul_rates(torch.device(device_key), seconds)


def compare_matmul_rates(
    device: torch.device, seconds: float, clock: Callable[[], float] = time.perf_counter
) -> MatmulRates:
    """fp32 and bf16 rates of square products on one `ladder` up to 1024 (best of LADDER_SAMPLES at a
    size before it grows), compared at its largest size: two ladders one after the other once compared
    a loaded fp32 with a quiet bf16 (or the reverse) and chose the wrong precision."""
    rates = ladder(device, (torch.float32, torch.bfloat16), seconds, 1024, LADDER_SAMPLES, clock=clock)
    size = max(rates)
    return MatmulRates(fp32=rates[size][torch.float32], bf16=rates[size][torch.bfloat16], size=size)


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str
    """bf16 or fp32: what training (and evaluation) runs in."""
    reason: str
    """One line: why, with the measured ratio."""
    bf16_speedup: float | None = None
    """Measured bf16 / fp32 matmul rate (None where not measured)."""
    warning: str | None = None
    """Set when an explicit choice is measured to be slow here."""


def choose_precision(requested: str, device: torch.device, rates: MatmulRates | None = None) -> PrecisionChoice:
    """`requested` (auto, bf16 or fp32) -> the precision to run in on `device`, and why.

    auto: on CUDA, bf16 where the GPU supports it; elsewhere bf16 only where bf16 products are
    measured faster than fp32 (`rates`, probed when not given). An explicit bf16 on a CPU where it is
    slower comes back with a warning naming the measured slowdown.
    """
    if requested == "fp32":
        return PrecisionChoice("fp32", "train.precision=fp32 (explicit)")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return PrecisionChoice("bf16", f"{requested}: {torch.cuda.get_device_name(device)} supports bf16")
        why = f"{torch.cuda.get_device_name(device)} does not support bf16"
        warning = f"train.precision=bf16 asked for but {why}; training in fp32" if requested == "bf16" else None
        return PrecisionChoice("fp32", f"{requested}: {why}", warning=warning)
    if device.type != "cpu":
        return PrecisionChoice("fp32" if requested == "auto" else requested, f"{requested} on {device.type}")
    rates = rates or probe_matmul_rates(str(device))
    ratio = rates.bf16_speedup
    measured = (
        f"bf16 matmuls {ratio:.2f}x the fp32 rate here ({rates.bf16 / 1e9:.1f} vs "
        f"{rates.fp32 / 1e9:.1f} GFLOP/s at {rates.size}x{rates.size})"
    )
    if requested == "bf16":
        warning = (
            None
            if ratio >= 1
            else (
                f"train.precision=bf16 is {1 / ratio:.0f}x slower than fp32 on this CPU "
                f"({measured}); use --train.precision auto or fp32"
            )
        )
        return PrecisionChoice("bf16", f"train.precision=bf16 (explicit); {measured}", ratio, warning)
    return PrecisionChoice("bf16" if ratio > 1 else "fp32", f"auto: {measured}", ratio)
