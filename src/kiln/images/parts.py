"""The trainer's parts for an image+text run (train/parts.py): image rows from the image shards, with
a share of every batch text windows from the run's text shards; the family's objective (captioning)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from kiln.images.shards import image_data
from kiln.models.registry import build_objective
from kiln.shards.loader import ShardSet
from kiln.tokenizer import tokenizer_hash
from kiln.train.parts import MODEL_FILE, check_shards

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from kiln.models.base import TokenModel
    from kiln.objectives.base import Objective
    from kiln.runconfig import RunConfig
    from kiln.rundir import RunDir
    from kiln.tokenizer import SpecialIds
    from kiln.train.trainer import Loader, ValidationData


class ImageParts:
    note = ""

    def data(
        self, cfg: RunConfig, run: RunDir, tokenizer: Tokenizer, ids: SpecialIds, rank: int, world_size: int
    ) -> tuple[Loader, ValidationData]:
        sha = tokenizer_hash(run.tokenizer)
        text = check_shards(ShardSet(run.split("train")), sha, cfg.model.vocab_size)
        return image_data(
            run.image_split("train"),
            run.image_split("val"),
            text,
            ids,
            sha,
            cfg.train,
            cfg.images.text_rows,
            rank,
            world_size,
        )

    def adapt(self, cfg: RunConfig, model: TokenModel) -> nn.Module:
        return model

    def objective(self, cfg: RunConfig, ids: SpecialIds) -> Objective:
        return build_objective(cfg.model, cfg.objective, ids)

    def weight_files(self, weights: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        return {MODEL_FILE: weights}
