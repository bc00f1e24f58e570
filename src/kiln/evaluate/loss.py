"""Validation loss and bits-per-byte.

bits-per-byte = (sum of cross-entropy, in nats, over predicted text tokens) / (ln 2 * UTF-8 bytes of
those tokens). Special tokens (bos/eos/pad) carry no text bytes and are left out of both sums, so
the figure compares models with different tokenizers.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from kiln.device import autocast


@torch.no_grad()
def evaluate_loss(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                  token_bytes: torch.Tensor, device: torch.device, precision: str = "fp32") -> dict[str, float]:
    """Mean loss (nats/token over all targets) and bits-per-byte over text targets.

    batches yield (inputs, targets), int64 (B, T); token_bytes (vocab,) int64 gives each id's bytes.
    """
    was_training = model.training
    model.eval()
    token_bytes = token_bytes.to(device)
    sum_loss = sum_text_loss = 0.0
    num_tokens = num_bytes = 0
    for inputs, targets in batches:
        inputs, targets = inputs.to(device), targets.to(device)
        with autocast(device, precision):
            logits = model(inputs)
        losses = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none")
        nbytes = token_bytes[targets.flatten()]
        sum_loss += losses.sum().item()
        sum_text_loss += (losses * (nbytes > 0)).sum().item()
        num_tokens += targets.numel()
        num_bytes += int(nbytes.sum().item())
    model.train(was_training)
    if num_tokens == 0:
        return {"loss": float("nan"), "bpb": float("nan"), "tokens": 0, "bytes": 0}
    return {
        "loss": sum_loss / num_tokens,
        "bpb": sum_text_loss / (math.log(2) * max(num_bytes, 1)),
        "tokens": num_tokens,
        "bytes": num_bytes,
    }
