"""FLOP counting for MFU (the matmul ceiling it is measured against: train/precision.py)."""

from __future__ import annotations

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
