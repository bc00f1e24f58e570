"""What a kind of training gives the one trainer: its data, its changes to the model, its objective,
and the weight files its checkpoints keep.

train/build.py asks a `Parts` object for each of these and knows no kind of training by name:
pretraining on a run's token shards is `ShardParts` here; fine-tuning (finetune/parts.py) and a
modality's runs (images/parts.py) bring their own, and stages.py picks the one a config asks for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import torch
from torch import nn

from kiln.config import whole
from kiln.errors import KilnError
from kiln.models.registry import build_objective
from kiln.shards.loader import PackedLoader, ShardSet, ShardValidation

if TYPE_CHECKING:
    from tokenizers import Tokenizer

    from kiln.models.base import TokenModel
    from kiln.objectives.base import Objective
    from kiln.runconfig import RunConfig
    from kiln.rundir import RunDir
    from kiln.tokenizer import SpecialIds
    from kiln.train.trainer import Loader, ValidationData

MODEL_FILE = "model.safetensors"
"""The checkpoint's plain language model: what eval, generate and export read."""


class Parts(Protocol):
    note: str
    """What `adapt` did, for the person watching (printed by rank 0; "" for nothing)."""

    def data(
        self, cfg: RunConfig, run: RunDir, tokenizer: Tokenizer, ids: SpecialIds, rank: int, world_size: int
    ) -> tuple[Loader, ValidationData]:
        """The training batches and the validation data; may print what they hold (rank 0)."""
        ...

    def adapt(self, cfg: RunConfig, model: TokenModel) -> nn.Module:
        """After the starting weights are loaded, before parallelism: the module the trainer calls
        (the model itself, or a view of it with a head), having changed the model as the kind of
        training needs (adapters, a frozen reference)."""
        ...

    def objective(self, cfg: RunConfig, ids: SpecialIds) -> Objective:
        """The training objective (after `adapt`)."""
        ...

    def weight_files(self, weights: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        """The full weights (by parameter name) -> file name -> tensors: MODEL_FILE the plain
        language model, and whatever else this kind of training keeps beside it."""
        ...


def check_shards(shards: ShardSet, tokenizer_sha256: str, vocab_size: int) -> ShardSet:
    """`shards`, checked to belong to this tokenizer and to fit this model's vocabulary."""
    if shards.tokenizer_sha256 != tokenizer_sha256:
        raise KilnError(f"shards in {shards.directory} were made with another tokenizer; re-run `kiln tokenize`")
    listed = shards.manifest.get("vocab_size")
    if not whole(listed) or listed > vocab_size:
        raise KilnError(f"tokenizer has {listed} tokens but model.vocab_size={vocab_size}; raise model.vocab_size")
    top = shards.max_token()
    if top >= vocab_size:  # a manifest that says otherwise: not shards kiln wrote with this tokenizer
        raise KilnError(
            f"shards in {shards.directory} hold token id {top}, beyond {vocab_size}; re-run `kiln tokenize`"
        )
    return shards


class ShardParts:
    """Pretraining: packed windows of the run's train shards, its val shards for validation, the
    family's objective, the model as it is."""

    note = ""

    def data(
        self, cfg: RunConfig, run: RunDir, tokenizer: Tokenizer, ids: SpecialIds, rank: int, world_size: int
    ) -> tuple[Loader, ValidationData]:
        from kiln.tokenizer import tokenizer_hash

        sha, tc = tokenizer_hash(run.tokenizer), cfg.train
        train = check_shards(ShardSet(run.split("train")), sha, cfg.model.vocab_size)
        val = ShardValidation(check_shards(ShardSet(run.split("val")), sha, cfg.model.vocab_size))
        return PackedLoader(train, tc.seq_len, tc.micro_batch_size, rank=rank, world_size=world_size, seed=tc.seed), val

    def adapt(self, cfg: RunConfig, model: TokenModel) -> nn.Module:
        return model

    def objective(self, cfg: RunConfig, ids: SpecialIds) -> Objective:
        return build_objective(cfg.model, cfg.objective, ids)

    def weight_files(self, weights: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
        return {MODEL_FILE: weights}
