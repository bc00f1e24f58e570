"""FLOP counting and the matmul peak that MFU is measured against."""

from __future__ import annotations

import time

import torch

from kiln.models.decoder import DecoderConfig


def decoder_flops_per_token(cfg: DecoderConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward), PaLM's convention: 6 * matmul params +
    12 * layers * width * seq_len for attention scores (counted in full, as is customary, although
    causal attention kernels skip the masked half)."""
    C, L, V = cfg.dim, cfg.num_layers, cfg.vocab_size
    kv_dim = cfg.num_kv_heads * cfg.head_dim
    per_layer = C * (C + 2 * kv_dim) + C * C + 3 * C * cfg.hidden_dim
    matmul_params = L * per_layer + C * V  # the output head is a matmul; the embedding lookup is not
    return 6 * matmul_params + 12 * L * C * seq_len


def measure_matmul_peak(device: torch.device, dtype: torch.dtype, seconds: float = 0.5) -> float:
    """Achieved FLOP/s of square matmuls on this machine (the best of a few sizes): the ceiling MFU
    is measured against."""
    sizes = (8192,) if device.type == "cuda" else (512, 1024, 2048)
    return max(_matmul_rate(device, dtype, n, seconds / len(sizes)) for n in sizes)


def _matmul_rate(device: torch.device, dtype: torch.dtype, size: int, seconds: float) -> float:
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        a @ b
    sync()
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        sync()
        best = max(best, 4 * 2 * size**3 / (time.perf_counter() - t0))
    return best
