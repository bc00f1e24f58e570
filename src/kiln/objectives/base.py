"""What every training objective provides, and the choice of objective for a model family.

An objective owns batch construction (from the loader's packed windows) and the loss, so the trainer
never branches on family:

    batch = objective.make_batch(raw, generator)   # on the host, deterministic per step
    loss, metrics = objective.loss(model, batch)               # scalar (fp32) + detached figures
    scores = objective.score(model, batch)                     # per-token losses for evaluate/loss.py

Random choices (masks, spans, FIM cuts) come from the `generator` the trainer seeds from the run seed
and the step, so a resumed run makes exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from kiln.batch import Batch, text_batch  # noqa: F401  (objectives and their callers name them here too)
from kiln.models.block import aux_loss, expert_load

if TYPE_CHECKING:
    from kiln.tokenizer import SpecialIds


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, upcast: bool = False) -> torch.Tensor:
    """Per-token cross-entropy, flattened (N,) (targets -100 give 0). Training keeps the logits' own
    dtype (the bf16 kernels are faster than an fp32 upcast of a (tokens, V) tensor; callers average
    in fp32); evaluation upcasts to fp32 for exact figures."""
    with torch.autocast(logits.device.type, enabled=False):  # autocast would upcast to fp32
        return F.cross_entropy(
            (logits.float() if upcast else logits).flatten(0, -2),
            targets.flatten(),
            reduction="none",
            ignore_index=-100,
        )


@dataclass
class TokenScores:
    """One batch scored per token, flattened to (N,): what the evaluation loop sums (evaluate/loss.py)."""

    losses: torch.Tensor
    """fp32 nats per token (0 where ignored)."""
    weights: torch.Tensor
    """1.0 for a scored token, 0.0 for an ignored one."""
    targets: torch.Tensor
    """Target ids (any valid id where ignored), for the bytes behind bits-per-byte."""
    correct: torch.Tensor | None = None
    """Whether the most likely token is the target, for objectives that report an accuracy."""
    figures: dict[str, torch.Tensor] | None = None
    """Further per-item values (N,), reported as their weighted mean (e.g. DPO's reward margin)."""


def token_scores(logits: torch.Tensor, targets: torch.Tensor, with_correct: bool) -> TokenScores:
    """Score logits (..., V) against targets (...) with -100 for ignored positions."""
    flat = targets.flatten()
    scored = flat != -100
    correct = (logits.argmax(-1).flatten() == flat) if with_correct else None
    return TokenScores(
        cross_entropy(logits, targets, upcast=True), scored.float(), torch.where(scored, flat, 0), correct
    )


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
    reports_bpb = False
    """Its targets are the text in order, so bits-per-byte means what it says."""
    accuracy_name: str | None = None
    """The name of the accuracy it reports (the share of scored tokens predicted exactly), if any."""
    final_windows = 0
    """Validation windows the final evaluation hands to `final_figures`."""

    def __init__(self, cfg: Any, ids: SpecialIds | None) -> None:
        self.cfg, self.ids = cfg, ids

    def make_batch(self, raw: Batch, gen: torch.Generator) -> Batch:
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def eval_batch(self, raw: Batch, gen: torch.Generator) -> Batch:
        """The batch evaluation scores (default: the training batch, with the evaluation generator)."""
        return self.make_batch(raw, gen)

    def score(self, model: nn.Module, batch: Batch) -> TokenScores:
        """Per-token losses of one (device) batch, for the evaluation loop."""
        raise NotImplementedError

    def final_figures(
        self, model: nn.Module, windows: list[torch.Tensor], device: torch.device, precision: str
    ) -> dict[str, float]:
        """Figures the final evaluation adds from its first `final_windows` windows."""
        return {}

    def final_eval_batches(self, num_windows: int, batch_size: int, seq_len: int) -> float:
        """What the final evaluation of `num_windows` costs, in forward passes of one validation batch
        (for planning a run to a time budget)."""
        return math.ceil(num_windows / batch_size)
