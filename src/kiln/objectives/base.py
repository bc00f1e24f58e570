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
from dataclasses import dataclass
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from kiln.config import require
from kiln.models.block import aux_loss, expert_load

Batch = dict[str, torch.Tensor]


@dataclass
class ObjectiveConfig:
    fim_rate: float = 0.0
    """Decoder/hybrid: fraction of sequences turned into fill-in-the-middle (prefix, suffix, middle)."""
    mask_rate: float = 0.15
    """Encoder: fraction of non-special tokens selected for prediction (BERT)."""
    mask_token_frac: float = 0.8
    """Encoder: of the selected, the share replaced by <|mask|> (BERT's 80/10/10)."""
    random_token_frac: float = 0.1
    """Encoder: of the selected, the share replaced by a random token (the rest stay unchanged)."""
    noise_density: float = 0.15
    """Encoder-decoder: fraction of tokens corrupted into spans (T5)."""
    mean_span_length: float = 3.0
    """Encoder-decoder: mean length of a corrupted span (T5)."""
    pseudo_ppl_windows: int = 2
    """Encoder: validation windows scored by pseudo-perplexity (one forward per token) at the end."""

    def __post_init__(self) -> None:
        require(0 <= self.fim_rate <= 1, "objective.fim_rate must be in [0, 1]")
        require(0 < self.mask_rate < 1, "objective.mask_rate must be in (0, 1)")
        require(self.mask_token_frac + self.random_token_frac <= 1, "objective: mask + random fractions exceed 1")
        require(0 < self.noise_density < 1, "objective.noise_density must be in (0, 1)")
        require(self.mean_span_length >= 1, "objective.mean_span_length must be >= 1")


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
