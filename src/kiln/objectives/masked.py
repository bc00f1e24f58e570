"""Masked language modelling (BERT / RoBERTa): predict a random 15 % of the tokens from both sides.

Each batch is masked afresh (RoBERTa's dynamic masking): every non-special token is selected with
probability `mask_rate`; a selected token is replaced by <|mask|> (80 %), by a random text token
(10 %) or left as it is (10 %), and the loss is the cross-entropy at the selected positions only.
Validation reports that loss, the accuracy at the selected positions, and at the end the
pseudo-perplexity (Salazar et al. 2020): each token masked alone, exp of the mean negative
log-likelihood of the true token.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from kiln.device import autocast
from kiln.objectives.base import (
    Batch,
    Objective,
    TokenScores,
    cross_entropy,
    token_scores,
    with_aux,
)
from kiln.objectives.config import MaskedConfig
from kiln.tokenizer import SpecialIds


class MaskedLM(Objective):
    ids: SpecialIds
    name = "masked_lm"
    section = "masked"
    accuracy_name = "masked_accuracy"

    def __init__(self, cfg: MaskedConfig, ids: SpecialIds) -> None:
        self.cfg, self.ids = cfg, ids
        self.final_windows = cfg.pseudo_ppl_windows

    def make_batch(self, raw: Batch, gen: torch.Generator) -> Batch:
        tokens = raw["inputs"]
        selected = (torch.rand(tokens.shape, generator=gen) < self.cfg.mask_rate) & (tokens >= self.ids.num_special)
        action = torch.rand(tokens.shape, generator=gen)
        mask_cut = self.cfg.mask_token_frac
        random_cut = mask_cut + self.cfg.random_token_frac
        random_ids = torch.randint(self.ids.num_special, self.ids.vocab_size, tokens.shape, generator=gen)
        corrupted = torch.where(selected & (action < mask_cut), self.ids.mask, tokens)
        corrupted = torch.where(selected & (action >= mask_cut) & (action < random_cut), random_ids, corrupted)
        return {"inputs": corrupted, "labels": torch.where(selected, tokens, -100)}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch["inputs"])
        labels = batch["labels"]
        picked = labels != -100
        losses = cross_entropy(logits, labels).float()
        loss = losses.sum() / picked.sum().clamp(min=1)
        with torch.no_grad():
            accuracy = ((logits.argmax(-1) == labels) & picked).sum() / picked.sum().clamp(min=1)
        return with_aux(model, loss, {"masked_accuracy": accuracy})

    @torch.no_grad()
    def pseudo_perplexity(
        self, model: nn.Module, window: torch.Tensor, device: torch.device, precision: str, chunk: int = 64
    ) -> tuple[float, int]:
        """(sum of -log p(token | all others), tokens scored) for one window (T,)."""
        positions = (window >= self.ids.num_special).nonzero().flatten()
        total = 0.0
        for start in range(0, len(positions), chunk):
            pos = positions[start : start + chunk]
            batch = window.repeat(len(pos), 1)
            batch[torch.arange(len(pos)), pos] = self.ids.mask
            with autocast(device, precision):
                logits = model(batch.to(device))
            picked = logits[torch.arange(len(pos)), pos.to(device)].float()
            total += F.cross_entropy(picked, window[pos].to(device), reduction="sum").item()
        return total, len(positions)

    def final_eval_batches(self, num_windows: int, batch_size: int, seq_len: int) -> float:
        """Masked-LM validation, plus pseudo-perplexity: one forward per token of each scored window."""
        return (
            super().final_eval_batches(num_windows, batch_size, seq_len)
            + self.cfg.pseudo_ppl_windows * seq_len / batch_size
        )

    def score(self, model: nn.Module, batch: Batch) -> TokenScores:
        return token_scores(model(batch["inputs"]), batch["labels"], with_correct=True)

    def final_figures(
        self, model: nn.Module, windows: list[torch.Tensor], device: torch.device, precision: str
    ) -> dict[str, float]:
        nll, n = map(sum, zip(*(self.pseudo_perplexity(model, w, device, precision) for w in windows)))
        return {"pseudo_perplexity": math.exp(nll / max(n, 1))}
