"""Next-token prediction (decoder, MoE decoder, hybrid), optionally with fill-in-the-middle.

FIM (Bavarian et al. 2022, PSM order): a sequence x is cut at two random points into prefix, middle
and suffix and trained as <|fim_prefix|> prefix <|fim_suffix|> suffix <|fim_middle|> middle, so the
model learns to write a middle given both sides. kiln cuts the packed training window (which may
span documents) and keeps its length by dropping the three tokens that fall off the end.
"""

from __future__ import annotations

import torch
from torch import nn

from kiln.objectives.base import (
    Batch,
    Objective,
    TokenScores,
    cross_entropy,
    token_scores,
    with_aux,
)
from kiln.objectives.config import CausalConfig
from kiln.tokenizer import SpecialIds


def fim_transform(window: torch.Tensor, ids: SpecialIds, gen: torch.Generator) -> torch.Tensor:
    """One window (L,) -> the same length in prefix/suffix/middle order with the FIM markers."""
    L = window.shape[0]
    a, b = sorted(torch.randint(0, L + 1, (2,), generator=gen).tolist())
    prefix, suffix, middle = (
        torch.tensor([i], dtype=window.dtype) for i in (ids.fim_prefix, ids.fim_suffix, ids.fim_middle)
    )
    out = torch.cat([prefix, window[:a], suffix, window[b:], middle, window[a:b]])
    return out[:L]


def masked_mean_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the target tokens; targets of -100 (a loss mask: prompt tokens in
    fine-tuning, image positions, padding) are left out of the mean."""
    losses = cross_entropy(logits, targets).float()
    scored = targets.flatten() != -100
    return losses.mean() if bool(scored.all()) else losses.sum() / scored.sum().clamp(min=1)


class CausalLM(Objective):
    """Targets are the inputs shifted by one (the loader provides both)."""

    name = "causal_lm"
    section = "causal"
    reports_bpb = True

    def __init__(self, cfg: CausalConfig | None = None, ids: SpecialIds | None = None) -> None:
        self.cfg, self.ids = cfg or CausalConfig(), ids

    def make_batch(self, raw: Batch, gen: torch.Generator) -> Batch:
        inputs, targets = raw["inputs"], raw["targets"]
        if self.cfg.fim_rate > 0:
            assert self.ids is not None, "fill-in-the-middle needs the tokenizer's special ids"
            windows = torch.cat([inputs, targets[:, -1:]], dim=1)
            chosen = torch.rand(windows.shape[0], generator=gen) < self.cfg.fim_rate
            for row in chosen.nonzero().flatten().tolist():
                windows[row] = fim_transform(windows[row], self.ids, gen)
            inputs, targets = windows[:, :-1], windows[:, 1:]
        return {"inputs": inputs, "targets": targets}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        # the model takes the targets and returns the masked mean itself: the head and the
        # cross-entropy fused, no (B, T, V) logits (models/head_loss.py)
        return with_aux(model, model(batch["inputs"], targets=batch["targets"]), {})

    def eval_batch(self, raw: Batch, gen: torch.Generator) -> Batch:
        return raw  # validation scores the text as it is, without FIM

    def score(self, model: nn.Module, batch: Batch) -> TokenScores:
        return token_scores(model(batch["inputs"]), batch["targets"], with_correct=False)
