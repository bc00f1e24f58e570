"""What every training objective provides, and the choice of objective for a model family.

An objective owns batch construction (from the loader's packed windows) and the loss, so the trainer
never branches on family:

    batch = objective.make_batch(inputs, targets, generator)   # on the host, deterministic per step
    loss, metrics = objective.loss(model, batch)               # scalar (fp32) + detached figures
    figures = objective.evaluate(model, batches, ...)          # validation; always has "loss"

Random choices (masks, spans, FIM cuts) come from the `generator` the trainer seeds from the run seed
and the step, so a resumed run makes exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from kiln.models.block import aux_loss, expert_load

Batch = dict[str, torch.Tensor]


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-token cross-entropy (targets -100 give 0), in the logits' own dtype: on CPU the bf16
    kernels run ~3.5x faster than an fp32 upcast of a (tokens, V) tensor. Callers average in fp32."""
    with torch.autocast(logits.device.type, enabled=False):  # autocast would upcast to fp32
        return F.cross_entropy(logits.flatten(0, -2), targets.flatten(), reduction="none", ignore_index=-100)


def with_aux(model: nn.Module, loss: torch.Tensor, metrics: dict[str, torch.Tensor]):
    """Add the MoE auxiliary losses (if any) to `loss`, and the routing figures to `metrics`."""
    aux = aux_loss(model)
    if aux is not None:
        metrics["moe_aux_loss"] = aux.detach()
        loads = torch.tensor(expert_load(model))  # (layers, experts)
        metrics["expert_load_max"] = loads.max(dim=1).values.mean()  # 1/E when balanced
        loss = loss + aux
    return loss, metrics


class Objective:
    name = "objective"
    section = ""
    """Which section of ObjectiveConfig configures it (the trainer builds it with that section)."""

    def make_batch(self, inputs: torch.Tensor, targets: torch.Tensor, gen: torch.Generator) -> Batch:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def evaluate(self, model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 token_bytes: torch.Tensor, device: torch.device, precision: str, final: bool) -> dict[str, float]:
        raise NotImplementedError

    def final_eval_batches(self, num_windows: int, batch_size: int, seq_len: int) -> float:
        """What the final evaluation of `num_windows` costs, in forward passes of one validation batch
        (for planning a run to a time budget)."""
        return math.ceil(num_windows / batch_size)
