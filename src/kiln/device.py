"""Device choice and the mixed-precision context, shared by training, evaluation and generation."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools

import torch

from kiln.errors import KilnError


def pick_device(name: str = "auto") -> torch.device:
    """'auto' -> cuda if available, else cpu; otherwise the named device, checked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise KilnError(f"device {name!r} asked for but no CUDA GPU is visible; use train.device=cpu or auto")
    try:
        return torch.device(name)
    except RuntimeError:
        raise KilnError(f"unknown device {name!r}; use auto, cpu or cuda") from None


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU (AMX/AVX512-BF16 matmuls) and GPU; a no-op for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


@functools.cache
def keep_freed_host_memory() -> bool:
    """Stop glibc from handing large freed blocks back to the OS.

    By default glibc serves allocations above 32 MB with mmap and unmaps them on free, so every
    training step page-faults its logits, their gradient and the MLP activations in afresh (slower
    steps: docs/benchmarks.md). Serving everything from the heap and never
    trimming it keeps those pages mapped between steps. It changes no numerics. Returns False where
    the C library is not glibc (nothing is changed there).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    m_trim_threshold, m_mmap_max = -1, -4
    return bool(mallopt(m_mmap_max, 0)) and bool(mallopt(m_trim_threshold, 2**31 - 1))


def compile_unavailable(device: torch.device) -> str | None:
    """Why torch.compile cannot run on `device` here, or None when it can: on a CPU, inductor writes
    C++ and needs a compiler ($CXX, or c++, g++ or clang++ on PATH) that can build its kernels (Python's
    headers, OpenMP: a Mac without libomp has the compiler and not the rest), tried once a process."""
    import os
    import shutil

    if device.type != "cpu":
        return None
    given = os.environ.get("CXX", "")
    if not ((given and shutil.which(given)) or any(shutil.which(c) for c in ("c++", "g++", "clang++"))):
        return "no C++ compiler on PATH (c++, g++, clang++ or $CXX), which torch.compile needs on a CPU"
    return _cpu_kernel_problem()


@functools.cache
def _cpu_kernel_problem() -> str | None:
    """One tiny function compiled for the CPU (a few seconds, mostly inductor's start-up, which the
    training step's compilation then reuses): why that fails, or None."""

    def double_sum(x: torch.Tensor) -> torch.Tensor:
        return (x * 2 + 1).sum()

    try:
        torch.compile(double_sum, fullgraph=True)(torch.ones(8))
    except Exception as e:  # CppCompileError, a missing header or library, an unsupported platform
        first = (str(e).strip().splitlines() or [""])[0][:160]
        return f"torch.compile cannot build a CPU kernel here ({type(e).__name__}: {first})"
    return None
