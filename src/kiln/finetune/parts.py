"""The trainer's parts for fine-tuning, by finetune.objective: data, model changes, objective.

train/build.py calls these in order: `load_data` (the file encoded into items, a loader and
held-out items), `adapt_model` after the starting weights are loaded (a frozen DPO reference, LoRA
adapters, the classification head), then `objective` with what adapt_model made.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from kiln.errors import KilnError
from kiln.finetune.classify import Classification, ClassifierView, ClassifyData, attach_classifier, pool_of
from kiln.finetune.dpo import DPO, PreferenceData
from kiln.finetune.items import ItemLoader, ItemValidation
from kiln.finetune.lora import apply_lora
from kiln.finetune.sft import SFTData
from kiln.models.base import TokenModel
from kiln.models.registry import build_objective
from kiln.objectives.base import Objective
from kiln.tokenizer import SpecialIds

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from kiln.runconfig import RunConfig

Data = SFTData | PreferenceData | ClassifyData


def load_data(cfg: RunConfig, tokenizer: Tokenizer, ids: SpecialIds) -> Data:
    """finetune.data (and finetune.val_data) encoded for finetune.objective."""
    ft, seq_len = cfg.finetune, cfg.train.seq_len
    path = Path(ft.data)
    if ft.objective == "dpo":
        return PreferenceData(path, tokenizer, ids, seq_len, ft.val_fraction, ft.val_data)
    if ft.objective == "classify":
        return ClassifyData(path, tokenizer, ids, seq_len, ft.val_fraction, ft.val_data, ft.labels or None)
    return SFTData(path, tokenizer, ids, seq_len, ft.val_fraction, ft.val_data)


def loaders(data: Data, batch_size: int, seed: int, rank: int, world_size: int) -> tuple[ItemLoader, ItemValidation]:
    return ItemLoader(data.train, batch_size, seed, rank, world_size), ItemValidation(data.val)


@dataclass
class Adapted:
    """What adapt_model made: the module the trainer calls, and DPO's reference (if a copy)."""

    forward: TokenModel | ClassifierView
    reference: nn.Module | None
    note: str = ""


def adapt_model(cfg: RunConfig, model: TokenModel, data: Data | None) -> Adapted:
    """The starting model, changed for fine-tuning: a frozen reference copy for DPO (taken before
    any adapter), LoRA adapters, a classification head (trainable even under LoRA)."""
    ft = cfg.finetune
    reference = None
    if ft.data and ft.objective == "dpo" and not ft.lora_rank:
        reference = copy.deepcopy(model).eval().requires_grad_(False)
    notes = []
    if ft.lora_rank:
        full = model.num_params()
        wrapped = apply_lora(model, ft.lora_targets, ft.lora_rank, ft.lora_alpha, ft.lora_dropout)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        notes.append(
            f"LoRA rank {ft.lora_rank} on {wrapped} layers: {trainable:,} trainable parameters of {full:,} "
            f"({trainable / full:.2%}); AdamW state {2 * trainable * 4 / 2**20:.2f} MiB instead of "
            f"{2 * full * 4 / 2**20:.1f} MiB"
        )
    forward: TokenModel | ClassifierView = model
    if ft.data and ft.objective == "classify":
        if not isinstance(data, ClassifyData):
            raise KilnError("finetune.objective=classify needs its labelled data")
        head = attach_classifier(model, len(data.labels))
        forward = ClassifierView(model)
        notes.append(f"classification head {cfg.model.dim} -> {head.out_features} labels, zero at the start")
    return Adapted(forward, reference, "\n".join(notes))


def objective(cfg: RunConfig, ids: SpecialIds, adapted: Adapted) -> Objective:
    """The fine-tuning objective, or the family's own (SFT trains it on answer tokens)."""
    ft = cfg.finetune
    if ft.data and ft.objective == "dpo":
        return DPO(ft.dpo_beta, adapted.reference)
    if ft.data and ft.objective == "classify":
        return Classification(pool_of(cfg.model.family), ids.pad)
    return build_objective(cfg.model, cfg.objective, ids)
