"""Direct preference optimisation (Rafailov et al. 2023): preference pairs, a frozen reference, beta.

A pair is `{"prompt": ..., "chosen": ..., "rejected": ...}`. Each answer is rendered through the
chat template (finetune/sft.py) as one user turn and one assistant turn; its targets are the
answer's tokens and <|eos|>, as in SFT, so log pi(y | x) is the sum of the answer's token
log-probabilities. A pair is an item of two rows, chosen then rejected (finetune/items.py), so
a batch holds whole pairs at even and odd rows. With r = beta * (log pi(y|x) - log pi_ref(y|x)):

    loss = -log sigmoid(r_chosen - r_rejected)

reported with the reward margin r_chosen - r_rejected, the mean rewards, and the preference
accuracy (the share of pairs with a positive margin). The reference is a frozen copy of the
starting model, or, for a LoRA policy, the same model with its adapters switched off (its base
weights are frozen, so it is the starting model without a second copy in memory). At the first step
policy = reference: every margin is 0 and the loss is log 2.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from kiln.errors import KilnError
from kiln.finetune.items import IGNORE, read_jsonl, split_items, stack_rows, string
from kiln.finetune.lora import lora_disabled
from kiln.finetune.method import Method
from kiln.finetune.sft import encode_example
from kiln.objectives.base import Batch, Objective, TokenScores, cross_entropy, with_aux
from kiln.tokenizer import SpecialIds

if TYPE_CHECKING:
    from kiln.runconfig import RunConfig


def parse_pair(rec: dict[str, Any]) -> dict[str, str]:
    pair = {k: string(rec, k) for k in ("prompt", "chosen", "rejected")}
    if pair["chosen"] == pair["rejected"]:
        raise ValueError("chosen and rejected are the same text")
    return pair


def answer_row(tok: Tokenizer, ids: SpecialIds, prompt: str, answer: str) -> tuple[list[int], list[int]]:
    """(inputs, targets) of one answer: targets are the next tokens where they are the answer's."""
    messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    tokens, flags = encode_example(tok, ids, messages)
    targets = [t if on else IGNORE for t, on in zip(tokens[1:], flags[1:])]
    return tokens[:-1], targets


class PreferenceData:
    """A file of preference pairs (and optionally a held-out file), encoded once into two-row items
    of `width` = the longest row, at most seq_len."""

    def __init__(
        self, path: Path, tok: Tokenizer, ids: SpecialIds, seq_len: int, val_fraction: float, val_path: str = ""
    ) -> None:
        expected = 'a preference pair {"prompt", "chosen", "rejected"}'
        pairs = read_jsonl(path, parse_pair, expected)
        held = read_jsonl(Path(val_path), parse_pair, expected) if val_path else None
        train, val = split_items(pairs, val_fraction, held, path)
        self.num_examples = {"train": len(train), "val": len(val)}
        encoded = {
            split: [[answer_row(tok, ids, p["prompt"], p[k]) for k in ("chosen", "rejected")] for p in items]
            for split, items in (("train", train), ("val", val))
        }
        longest = max(len(row[0]) for items in encoded.values() for item in items for row in item)
        self.width = min(seq_len, longest)
        self.cut = sum(
            any(all(t == IGNORE for t in row[1][: self.width]) for row in item)
            for items in encoded.values()
            for item in items
        )
        if self.cut == len(train) + len(val):
            raise KilnError(f"{path}: every answer lies past train.seq_len={seq_len} tokens; raise it")
        self.train = stack_rows(encoded["train"], self.width, ids.pad)
        self.val = stack_rows(encoded["val"], self.width, ids.pad)

    def describe(self) -> str:
        cut = f"; {self.cut} pair(s) cut to nothing at {self.width} tokens" if self.cut else ""
        return (
            f"DPO on {self.num_examples['train']} preference pairs ({self.width} tokens a row); "
            f"{self.num_examples['val']} held out{cut}"
        )


def sequence_logprobs(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits and (B, T) targets -> (B,) summed log-probabilities of the scored tokens (fp32)."""
    return -cross_entropy(logits, targets, upcast=True).view(targets.shape).sum(-1)


class DPO(Objective):
    """The DPO loss on batches of pairs (rows 0, 2, ... chosen; 1, 3, ... rejected)."""

    name = "dpo"
    accuracy_name = "preference_accuracy"

    def __init__(self, beta: float, reference: nn.Module | None = None) -> None:
        super().__init__(None, None)
        self.beta, self.reference = beta, reference
        """A frozen copy of the starting model; None: the policy with its LoRA adapters off."""

    def make_batch(self, raw: Batch, gen: torch.Generator) -> Batch:
        return raw

    def rewards(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """beta x log(pi / pi_ref) of the chosen and of the rejected answers, (pairs,) each."""
        inputs, targets = batch["inputs"], batch["targets"]
        with torch.no_grad():
            if self.reference is not None:
                ref = sequence_logprobs(self.reference(inputs), targets)
            else:
                with lora_disabled(model):
                    ref = sequence_logprobs(model(inputs), targets)
        log_ratio = sequence_logprobs(model(inputs), targets) - ref
        return self.beta * log_ratio[0::2], self.beta * log_ratio[1::2]

    @staticmethod
    def figures(chosen: torch.Tensor, rejected: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"reward_margin": chosen - rejected, "chosen_reward": chosen, "rejected_reward": rejected}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        chosen, rejected = self.rewards(model, batch)
        margin = chosen - rejected
        metrics = {k: v.detach().mean() for k, v in self.figures(chosen, rejected).items()}
        metrics["preference_accuracy"] = (margin.detach() > 0).float().mean()
        return with_aux(model, -F.logsigmoid(margin).mean(), metrics)

    def score(self, model: nn.Module, batch: Batch) -> TokenScores:
        """One "token" per pair: its DPO loss, whether it prefers the chosen answer, its rewards."""
        chosen, rejected = self.rewards(model, batch)
        margin = chosen - rejected
        ones = torch.ones_like(margin)
        zeros = torch.zeros(margin.shape, dtype=torch.long, device=margin.device)
        return TokenScores(-F.logsigmoid(margin), ones, zeros, margin > 0, self.figures(chosen, rejected))


def load_pairs(cfg: RunConfig, tok: Tokenizer, ids: SpecialIds) -> PreferenceData:
    ft = cfg.finetune
    return PreferenceData(Path(ft.data), tok, ids, cfg.train.seq_len, ft.val_fraction, ft.val_data)


def _reference(cfg: RunConfig, model: nn.Module, state: dict[str, Any]) -> str:
    """A frozen copy of the starting model, taken before any adapter; with LoRA none (the policy with
    its adapters off is the reference)."""
    state["reference"] = None if cfg.finetune.lora_rank else copy.deepcopy(model).eval().requires_grad_(False)
    return ""


METHOD = Method(
    name="dpo",
    help='preference pairs {"prompt", "chosen", "rejected"} against a frozen reference (finetune.dpo_beta)',
    fits=lambda spec: spec.causal,
    load=load_pairs,
    objective=lambda cfg, ids, state: DPO(cfg.finetune.dpo_beta, state.get("reference")),
    rows_of_one=True,
    prepare=_reference,
)
