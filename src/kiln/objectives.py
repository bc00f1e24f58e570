"""Training objectives: each turns a batch into a scalar loss, so the trainer never branches on family."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CausalLM:
    """Next-token prediction: targets are the inputs shifted by one (the loader provides both)."""

    name = "causal_lm"

    def loss(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """inputs, targets (B, T) int64 -> mean cross-entropy in nats (fp32 scalar)."""
        logits = model(inputs)  # (B, T, V)
        return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
