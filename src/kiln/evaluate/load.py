"""Load a checkpoint for evaluation or generation: model, config, tokenizer, checked together."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer

from kiln.config import from_dict
from kiln.errors import KilnError
from kiln.models.base import TokenModel
from kiln.models.build import build_model
from kiln.models.registry import build_objective
from kiln.objectives.base import Objective
from kiln.runconfig import RunConfig
from kiln.rundir import TOKENIZER
from kiln.tokenizer import (
    SpecialIds,
    load_tokenizer,
    objective_ids,
    token_byte_lengths,
    tokenizer_hash,
)
from kiln.train.checkpoint import load_weights, read_config, read_state
from kiln.train.precision import choose_precision


@dataclass
class LoadedCheckpoint:
    model: TokenModel
    cfg: RunConfig
    tokenizer: Tokenizer
    tokenizer_sha256: str
    token_bytes: torch.Tensor
    step: int
    ids: SpecialIds
    objective: Objective
    precision: str
    """What to compute in here: the training precision, or fp32 where bf16 is measured slow on this
    device (a bf16-trained checkpoint evaluated on an AVX2-only CPU)."""


def load_checkpoint(path: Path, device: torch.device, tokenizer_path: Path | None = None) -> LoadedCheckpoint:
    """Model weights + config from `path` (a checkpoints/step_N directory); the tokenizer from
    `tokenizer_path` or the copy inside the checkpoint. A tokenizer other than the one the model
    was trained with is refused. Reads model.safetensors and JSON only, never dcp/ (whose metadata is
    a pickle): a checkpoint without model.safetensors is refused with the command that makes one."""
    path = Path(path)
    if not path.is_dir():
        raise KilnError(f"checkpoint {path} is not a directory; pass a run's checkpoints/step_N directory")
    state = read_state(path)
    cfg = from_dict(RunConfig, read_config(path))
    tok_path = Path(tokenizer_path) if tokenizer_path else path / TOKENIZER
    tokenizer = load_tokenizer(tok_path)
    sha = tokenizer_hash(tok_path)
    if sha != state.get("tokenizer_sha256"):
        raise KilnError(
            f"tokenizer {tok_path} is not the one checkpoint {path} was trained with; "
            "use the tokenizer.json saved in the checkpoint"
        )
    if tokenizer.get_vocab_size() > cfg.model.vocab_size:
        raise KilnError(
            f"tokenizer {tok_path} has {tokenizer.get_vocab_size()} tokens, more than checkpoint {path}'s model "
            f"({cfg.model.vocab_size}): not the model it was trained with"
        )
    model = build_model(cfg.model, device)
    load_weights(path, model)
    model.eval()
    token_bytes = torch.tensor(token_byte_lengths(tokenizer, pad_to=cfg.model.vocab_size))
    ids = objective_ids(tokenizer)
    precision = "fp32" if cfg.train.precision == "fp32" else choose_precision("auto", device).precision
    return LoadedCheckpoint(
        model,
        cfg,
        tokenizer,
        sha,
        token_bytes,
        state["step"],
        ids,
        build_objective(cfg.model, cfg.objective, ids),
        precision,
    )
