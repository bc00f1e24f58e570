"""The trainer's parts for fine-tuning (train/parts.py's Parts), from the method a config names.

In the order train/build.py asks: the data (the method's rows, a resumable item loader), the model
changes after the starting weights are loaded (the method's `prepare`, e.g. DPO's reference copy,
then LoRA adapters when finetune.lora_rank is set, then the method's `head`), the objective, and the
weight files (merged weights as the language model, the adapters and the method's own apart).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kiln.finetune.items import ItemLoader, ItemValidation
from kiln.finetune.lora import adapter_weights, apply_lora, merged_weights
from kiln.finetune.method import Data
from kiln.finetune.methods import method
from kiln.train.parts import MODEL_FILE

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from kiln.models.base import TokenModel
    from kiln.objectives.base import Objective
    from kiln.runconfig import RunConfig
    from kiln.rundir import RunDir
    from kiln.tokenizer import SpecialIds

ADAPTER_FILE = "adapter.safetensors"


class FinetuneParts:
    """finetune.objective's method, as the parts the one trainer takes."""

    def __init__(self, cfg: RunConfig) -> None:
        self.method = method(cfg.finetune.objective)
        self.rows: Data | None = None
        self.state: dict[str, Any] = {}
        """What the method's model changes leave for its objective (DPO's reference)."""
        self.note = ""

    def data(
        self, cfg: RunConfig, run: RunDir, tokenizer: Tokenizer, ids: SpecialIds, rank: int, world_size: int
    ) -> tuple[ItemLoader, ItemValidation]:
        self.rows = self.method.load(cfg, tokenizer, ids)
        if rank == 0:
            print(self.rows.describe())
        tc = cfg.train
        return ItemLoader(self.rows.train, tc.micro_batch_size, tc.seed, rank, world_size), ItemValidation(
            self.rows.val
        )

    def adapt(self, cfg: RunConfig, model: TokenModel) -> nn.Module:
        ft, notes = cfg.finetune, []
        if self.method.prepare is not None:
            notes.append(self.method.prepare(cfg, model, self.state))
        if ft.lora_rank:
            full = model.num_params()
            wrapped = apply_lora(model, ft.lora_targets, ft.lora_rank, ft.lora_alpha, ft.lora_dropout)
            trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
            notes.append(
                f"LoRA rank {ft.lora_rank} on {wrapped} layers: {trainable:,} trainable parameters of {full:,} "
                f"({trainable / full:.2%}); AdamW state {2 * trainable * 4 / 2**20:.2f} MiB instead of "
                f"{2 * full * 4 / 2**20:.1f} MiB"
            )
        forward: nn.Module = model
        if self.method.head is not None:
            assert self.rows is not None, "the data is loaded before the model is adapted"
            forward, note = self.method.head(cfg, model, self.rows, self.state)
            notes.append(note)
        self.note = "\n".join(n for n in notes if n)
        return forward

    def objective(self, cfg: RunConfig, ids: SpecialIds) -> Objective:
        return self.method.objective(cfg, ids, self.state)

    def weight_files(self, weights: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        files: dict[str, dict[str, torch.Tensor]] = {}
        adapters = adapter_weights(weights)
        if adapters:  # the adapters alone, and the merged weights that eval, generate and export read
            files[ADAPTER_FILE] = adapters
            weights = merged_weights(weights)
        if self.method.split is not None:
            split = self.method.split(weights)
            weights = split.pop(MODEL_FILE)
            files |= split
        return {MODEL_FILE: weights, **files}
