"""AdamW with decoupled weight decay on matrices only, and learning-rate schedules as pure functions."""

from __future__ import annotations

import math

import torch
from torch import nn


def build_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], device: torch.device
) -> torch.optim.AdamW:
    """AdamW; weight decay applies to parameters with 2+ dims (matmul weights, embeddings), not to
    norms or biases."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type in ("cpu", "cuda"))


def lr_at(
    step: int, max_steps: int, warmup_steps: int, schedule: str, decay_fraction: float, min_lr_ratio: float
) -> float:
    """Learning-rate multiplier in [min_lr_ratio, 1] at optimizer step `step` (0-based).

    cosine: linear warmup, then cosine decay to min_lr_ratio at max_steps.
    wsd:    linear warmup, constant, then linear decay over the last decay_fraction of steps.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "cosine":
        progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    decay_steps = max(1, round(decay_fraction * max_steps))
    decay_start = max_steps - decay_steps
    if step < decay_start:
        return 1.0
    progress = (step - decay_start) / decay_steps
    return 1.0 - (1 - min_lr_ratio) * min(progress, 1.0)
