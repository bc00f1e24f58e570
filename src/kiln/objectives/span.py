"""Span corruption (T5): drop random spans from the text and train the decoder to write them back.

With noise density d and mean span length m, a window of L tokens loses round(L * d) tokens in
round(L * d / m) spans (span and gap lengths drawn as in T5's random segmentation). The encoder reads
the text with each span replaced by one sentinel, then <|eos|>; the decoder target is each sentinel
followed by the tokens it replaced, then <|eos|>:

    text     the cat sat on the mat today
    inputs   the cat <s0> the mat <s1> <eos>
    targets  <s0> sat on <s1> today <eos>

Every window of a batch has the same length, so inputs and targets have fixed shapes. `reconstruct`
undoes it (tested: inputs + targets give back the text), and fills the spans `kiln generate` writes.
"""

from __future__ import annotations

import torch
from torch import nn

from kiln.errors import KilnError
from kiln.objectives.base import (
    Batch,
    Objective,
    TokenScores,
    cross_entropy,
    token_scores,
    with_aux,
)
from kiln.objectives.config import SpanConfig
from kiln.tokenizer import SpecialIds


def _segments(total: int, parts: int, gen: torch.Generator) -> list[int]:
    """`total` split into `parts` positive lengths at random cut points."""
    cuts = (torch.randperm(total - 1, generator=gen)[: parts - 1] + 1).sort().values.tolist()
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds, bounds[1:])]


def corrupt(
    window: torch.Tensor, noise: int, spans: int, sentinels: tuple[int, ...], eos: int, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets) for one window: gaps and spans alternate, starting with a gap."""
    noise_lens, gap_lens = _segments(noise, spans, gen), _segments(len(window) - noise, spans, gen)
    inputs, targets, pos = [], [], 0
    for i, (gap, span) in enumerate(zip(gap_lens, noise_lens)):
        inputs += window[pos : pos + gap].tolist() + [sentinels[i]]
        targets += [sentinels[i]] + window[pos + gap : pos + gap + span].tolist()
        pos += gap + span
    return torch.tensor(inputs + [eos]), torch.tensor(targets + [eos])


def reconstruct(
    inputs: list[int], targets: list[int], sentinels: tuple[int, ...], eos: int, generated: bool = False
) -> list[int]:
    """Put each sentinel's span (from targets) back in place of the sentinel (in inputs). Each list
    ends with the <|eos|> `corrupt` appended (packed text may hold more <|eos|> inside); a `generated`
    target ends at its first <|eos|> instead."""
    inputs = inputs[:-1] if inputs and inputs[-1] == eos else inputs
    if generated:
        targets = targets[: targets.index(eos)] if eos in targets else targets
    elif targets and targets[-1] == eos:
        targets = targets[:-1]
    spans: dict[int, list[int]] = {}
    current = None
    for t in targets:
        if t in sentinels:
            current = t
            spans[t] = []
        elif current is not None:
            spans[current].append(t)
    out = []
    for t in inputs:
        out += spans.get(t, []) if t in sentinels else [t]
    return out


class SpanCorruption(Objective):
    ids: SpecialIds
    name = "span_corruption"
    section = "span"
    accuracy_name = "target_accuracy"

    def __init__(self, cfg: SpanConfig, ids: SpecialIds) -> None:
        self.cfg, self.ids = cfg, ids

    def make_batch(self, raw: Batch, gen: torch.Generator) -> Batch:
        windows = torch.cat([raw["inputs"], raw["targets"][:, -1:]], dim=1)
        noise, spans = self.cfg.counts(windows.shape[1])
        if spans > len(self.ids.sentinels):
            raise KilnError(
                f"span corruption of {windows.shape[1]}-token windows needs {spans} sentinels; the "
                f"tokenizer has {len(self.ids.sentinels)}: raise tokenizer.num_sentinels"
            )
        pairs = [corrupt(w, noise, spans, self.ids.sentinels, self.ids.eos, gen) for w in windows]
        src = torch.stack([p[0] for p in pairs])
        tgt = torch.stack([p[1] for p in pairs])
        start = torch.full((len(pairs), 1), self.ids.bos, dtype=tgt.dtype)
        return {"src": src, "tgt_in": torch.cat([start, tgt[:, :-1]], dim=1), "tgt": tgt}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits = model(batch["src"], batch["tgt_in"])
        return with_aux(model, cross_entropy(logits, batch["tgt"]).float().mean(), {})

    def score(self, model: nn.Module, batch: Batch) -> TokenScores:
        return token_scores(model(batch["src"], batch["tgt_in"]), batch["tgt"], with_correct=True)
