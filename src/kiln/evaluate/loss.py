"""The one evaluation loop: every objective's validation figures from its per-token scores.

An objective scores a batch as per-token losses (nats, fp32) with weights (1 for a scored token,
0 for an ignored one) and the target ids (`Objective.score`); this loop sums them over all batches:

    loss = sum(w * l) / sum(w)                                        nats per scored token
    bpb  = sum(w * l * [bytes(t) > 0]) / (ln 2 * sum(w * bytes(t)))   bits per UTF-8 byte of text
    acc  = sum(w * [argmax = t]) / sum(w)                             where the objective reports one
    f    = sum(w * f) / sum(w)                                        each further figure it reports

A "token" is whatever the objective scores one loss for: a token of text, a preference pair (DPO),
a labelled text (classification).

Special tokens (bos/eos/pad) carry no text bytes and are left out of both bpb sums, so the figure
compares models with different tokenizers. Random choices (masks, spans) come from a generator seeded
the same at every evaluation, so figures are comparable across steps.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import torch
from torch import nn

from kiln.device import autocast

if TYPE_CHECKING:
    from kiln.objectives.base import Batch, Objective

EVAL_SEED = 1234
"""Seeds the objective's random choices during evaluation (the same masks and spans every time)."""


@torch.no_grad()
def validation_loss(
    objective: Objective,
    model: nn.Module,
    batches: Iterable[Batch],
    token_bytes: torch.Tensor,
    device: torch.device,
    precision: str = "fp32",
    final: bool = True,
) -> dict[str, float]:
    """The objective's figures over a loader's `batches` ("inputs", "targets" int64 (B, T), ...): "loss" and
    "tokens" always; "bpb" and "bytes" for objectives that predict text in order; an accuracy where
    the objective names one; with `final`, the objective's closing figures (e.g. pseudo-perplexity).
    token_bytes (vocab,) int64 gives each id's UTF-8 bytes."""
    was_training = model.training
    model.eval()
    token_bytes = token_bytes.to(device)
    gen = torch.Generator().manual_seed(EVAL_SEED)
    loss_sum = text_loss_sum = correct = 0.0
    count = num_bytes = 0
    kept: list[torch.Tensor] = []
    sums: dict[str, float] = {}
    for raw in batches:
        if final and len(kept) < objective.final_windows:
            kept.extend(raw["inputs"][: objective.final_windows - len(kept)])
        batch = {k: v.to(device) for k, v in objective.eval_batch(raw, gen).items()}
        with autocast(device, precision):
            scores = objective.score(model, batch)
        weighted = scores.losses * scores.weights
        loss_sum += weighted.sum().item()
        count += int(scores.weights.sum().item())
        if objective.reports_bpb:
            nbytes = token_bytes[scores.targets] * scores.weights.to(token_bytes.dtype)
            text_loss_sum += (weighted * (nbytes > 0)).sum().item()
            num_bytes += int(nbytes.sum().item())
        if scores.correct is not None:
            correct += (scores.correct & (scores.weights > 0)).sum().item()
        for name, values in (scores.figures or {}).items():
            sums[name] = sums.get(name, 0.0) + (values.float() * scores.weights).sum().item()
    out: dict[str, float] = {"loss": loss_sum / count if count else float("nan"), "tokens": count}
    if objective.reports_bpb:
        out["bpb"] = text_loss_sum / (math.log(2) * max(num_bytes, 1)) if count else float("nan")
        out["bytes"] = num_bytes
    if objective.accuracy_name:
        out[objective.accuracy_name] = correct / max(count, 1)
    out.update({name: total / max(count, 1) for name, total in sums.items()})
    if kept:
        out.update(objective.final_figures(model, kept, device, precision))
    model.train(was_training)
    return out
