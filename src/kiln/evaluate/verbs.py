"""The checkpoint tools behind `kiln eval` and `kiln generate` (and `kiln run`'s samples).

Each takes a checkpoint directory: its model, config and tokenizer are loaded together (load.py),
in the precision this device runs fastest among those the checkpoint allows.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from kiln.config import apply_overrides
from kiln.corpus import CorpusConfig, read_documents
from kiln.device import pick_device
from kiln.errors import KilnError
from kiln.evaluate.load import LoadedCheckpoint, load_checkpoint
from kiln.evaluate.loss import validation_loss
from kiln.models.registry import family
from kiln.rundir import RunDir
from kiln.shards.config import ShardConfig
from kiln.shards.loader import ShardSet, iterate_windows
from kiln.shards.writer import write_shards


def evaluate_checkpoint(
    checkpoint: Path, text: Path | None, shards: Path | None, tokenizer_path: Path | None, device_name: str = "auto"
) -> dict[str, Any]:
    """Loss and bits-per-byte of a checkpoint on a text file/folder/.jsonl or a shard directory
    (default: the validation shards of the run the checkpoint belongs to)."""
    device = pick_device(device_name)
    loaded = load_checkpoint(checkpoint, device, tokenizer_path)
    seq_len, batch = loaded.cfg.train.seq_len, loaded.cfg.train.micro_batch_size
    if text is not None:
        with tempfile.TemporaryDirectory() as tmp:
            docs = read_documents(CorpusConfig(corpus=str(text)))
            write_shards(docs, loaded.tokenizer, loaded.tokenizer_sha256, {"eval": Path(tmp)}, ShardConfig())
            result = _eval_shards(loaded, ShardSet(Path(tmp)), seq_len, batch, device)
    else:
        shard_dir = shards or RunDir(checkpoint.parent.parent).split("val")
        result = _eval_shards(loaded, ShardSet(shard_dir), seq_len, batch, device)
    result["checkpoint"] = str(checkpoint)
    result["step"] = loaded.step
    return result


def _eval_shards(
    loaded: LoadedCheckpoint, shard_set: ShardSet, seq_len: int, batch: int, device: torch.device
) -> dict[str, Any]:
    if shard_set.tokenizer_sha256 != loaded.tokenizer_sha256:
        raise KilnError(
            f"shards in {shard_set.directory} were made with another tokenizer than the checkpoint's; "
            "evaluate on text (--text) or on shards from the same run"
        )
    if shard_set.num_tokens < 2:
        raise KilnError(f"{shard_set.directory} holds too little text to evaluate")
    seq_len = min(seq_len, shard_set.num_tokens - 1)
    batches = iterate_windows(shard_set, seq_len, batch)
    return validation_loss(loaded.objective, loaded.model, batches, loaded.token_bytes, device, loaded.precision)


def sample_checkpoint(
    checkpoint: Path,
    prompts: list[str] | None,
    cfg_overrides: dict[str, Any] | None = None,
    device_name: str = "auto",
    use_cache: bool = True,
) -> list[str]:
    """Continue each prompt with the checkpoint's model; returns prompt + continuation texts."""
    device = pick_device(device_name)
    loaded = load_checkpoint(checkpoint, device)
    if loaded.precision == "bf16":
        # bf16 weights once, instead of autocast casting every weight again for every new token
        loaded.model.to(torch.bfloat16)
    sc = apply_overrides(loaded.cfg, cfg_overrides or {}).sample
    if prompts is None:
        prompts = [p for p in sc.prompts.split("|") if p.strip()]
    spec = family(loaded.cfg.model.family)  # continue (causal), fill masks (encoder) or write spans (encdec)
    return [
        spec.sample(loaded.model, loaded.tokenizer, loaded.ids, prompt, sc, sc.seed + i, loaded.precision, use_cache)
        for i, prompt in enumerate(prompts)
    ]
