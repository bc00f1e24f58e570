"""Captioning and interleaved image+text: next-token prediction on text given the images before it.

Batches come from images/shards.py's ImageLoader: "inputs"/"targets" (B, T) with -100 wherever the
next token is no text (image patches, their markers, padding), "pixels" (B, K, S, S, 3) uint8 and
"num_images" (B,). Text-only rows of the same batch (the run's text shards) have no image tokens and
train the language as CausalLM does. The image positions are found by the <|image|> id, so a batch
carries no separate mask.
"""

from __future__ import annotations

import torch
from torch import nn

from kiln.errors import KilnError
from kiln.objectives.base import Batch, TokenScores, token_scores, with_aux
from kiln.objectives.causal import CausalLM


class CaptionLM(CausalLM):
    name = "caption_lm"
    section = "causal"
    reports_bpb = True

    def make_batch(self, raw: Batch, gen: torch.Generator) -> Batch:
        if self.ids is None or self.ids.image < 0:
            raise KilnError("model.family=vlm needs a tokenizer with image tokens: tokenizer.image_tokens=true")
        batch = {"inputs": raw["inputs"], "targets": raw["targets"]}
        if "pixels" in raw:
            batch["pixels"] = raw["pixels"]
        return batch

    def eval_batch(self, raw: Batch, gen: torch.Generator) -> Batch:
        return self.make_batch(raw, gen)

    def forward(self, model: nn.Module, batch: Batch, targets: torch.Tensor | None = None) -> torch.Tensor:
        """The logits (B, T, V), or with `targets` the mean loss (the fused head: models/head_loss.py)."""
        assert self.ids is not None
        if "pixels" not in batch:
            return model(batch["inputs"], targets=targets)
        mask = batch["inputs"] == self.ids.image
        return model(batch["inputs"], images=batch["pixels"], image_mask=mask, targets=targets)

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return with_aux(model, self.forward(model, batch, batch["targets"]), {})

    def score(self, model: nn.Module, batch: Batch) -> TokenScores:
        return token_scores(self.forward(model, batch), batch["targets"], with_correct=False)
