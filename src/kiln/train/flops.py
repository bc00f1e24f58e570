"""FLOPs for MFU (the matmul ceiling it is measured against: train/precision.py), and the matmul
weights of a built model, which the config-only counts of models/spec.py are checked against."""

from __future__ import annotations

from torch import nn

from kiln.models.config import ModelConfig
from kiln.models.moe import MoE
from kiln.models.registry import family
from kiln.objectives.config import ObjectiveConfig


def matmul_params(module: nn.Module) -> float:
    """Weights each token multiplies by once in a forward pass (MoE experts weighted by top_k / E)."""
    total = 0.0
    for m in module.modules():
        if isinstance(m, nn.Linear):
            total += m.weight.numel()
        elif isinstance(m, MoE):
            total += (m.w_gate_up.numel() + m.w_down.numel()) * m.cfg.top_k / m.cfg.num_experts
    return total


def flops_per_token(cfg: ModelConfig, seq_len: int, objective: ObjectiveConfig) -> float:
    """Training FLOPs per token of the training window (forward + backward) for `cfg`, from the config
    alone: the family spec's count (PaLM's convention, see models/spec.py)."""
    return family(cfg.family).flops_per_token(cfg, seq_len, objective)


def forward_matmul_shapes(model: nn.Module, tokens: int) -> list[tuple[int, int, int]]:
    """The distinct (M, K, N) products a forward pass multiplies for `tokens` rows: each linear layer's
    (tokens, in) x (in, out). The backward's are these transposed, of the same sizes."""
    shapes = {(tokens, m.in_features, m.out_features) for m in model.modules() if isinstance(m, nn.Linear)}
    return sorted(shapes)
