"""FLOP counting and the matmul peak that MFU is measured against."""

from __future__ import annotations

import time

import torch
from torch import nn

from kiln.models.config import ModelConfig
from kiln.models.layers import Attention, CrossAttention
from kiln.models.moe import MoE


def matmul_params(module: nn.Module) -> float:
    """Weights each token multiplies by once in a forward pass (MoE experts weighted by top_k / E)."""
    total = 0.0
    for m in module.modules():
        if isinstance(m, nn.Linear):
            total += m.weight.numel()
        elif isinstance(m, MoE):
            total += (m.w_gate_up.numel() + m.w_down.numel()) * m.cfg.top_k / m.cfg.num_experts
    return total


def _attention_layers(module: nn.Module) -> int:
    return sum(isinstance(m, (Attention, CrossAttention)) for m in module.modules())


def flops_per_token(model: nn.Module, cfg: ModelConfig, seq_len: int, noise_density: float = 0.15,
                    mean_span: float = 3.0) -> float:
    """Training FLOPs per token of the training window (forward + backward), PaLM's convention:
    6 * matmul weights + 12 * attention layers * width * seq_len for the attention scores (counted in
    full, as is customary). MoE experts count at top_k / num_experts. The SSM scan and convolution
    are left out (a few % of the total at these widths). Encoder-decoder: the encoder sees about
    (1 - d + d/m) and the decoder (d + d/m) tokens per window token (T5 span corruption)."""
    C = cfg.dim
    if cfg.family != "encdec":
        return 6 * matmul_params(model) + 12 * _attention_layers(model) * C * seq_len
    src, tgt = 1 - noise_density + noise_density / mean_span, noise_density + noise_density / mean_span
    enc = 6 * matmul_params(model.encoder) + 12 * _attention_layers(model.encoder) * C * seq_len * src
    dec = 6 * (matmul_params(model.decoder) + cfg.dim * cfg.vocab_size) + \
        12 * _attention_layers(model.decoder) * C * seq_len * (tgt + src) / 2
    return enc * src + dec * tgt


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
