"""`kiln import --from hf DIR`: a local Llama, Qwen3 or Mixtral folder as a kiln run with one checkpoint.

Reads config.json, the safetensors weights (one file or an index of shards) and tokenizer.json, and
writes `<run>/checkpoints/step_0/` (model.safetensors, config.json, tokenizer.json, state.json,
manifest.json) and `<run>/tokenizer.json`, which `kiln eval`, `kiln generate` and
`kiln train --train.init_from <run>/checkpoints/step_0` take like any kiln checkpoint.

kiln's objectives look their special tokens up by name (<|pad|>, <|bos|>, <|eos|>, <|mask|> and the
FIM markers). A tokenizer kiln exported has them; for another one (Llama's `<s>`, `</s>`), the
missing ones are added after its vocabulary, and the embedding (and an untied head) grows to
hold them: <|bos|> and <|eos|> start as copies of the rows of the model's own bos/eos tokens (so
the model reads <|bos|> as it read `<s>`), the rest as the mean row. A kiln export comes back
bitwise: the same weights, and the tokenizer file byte for byte (the bos post-processor the export
added is removed again).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from tokenizers import AddedToken, Tokenizer

from kiln.config import to_dict
from kiln.errors import KilnError
from kiln.presets import cpu
from kiln.rundir import CONFIG, STATE, TOKENIZER, RunDir
from kiln.staging import STAGED, rename_synced, save_tensors, sync, sync_tree
from kiln.tokenizer import BOS, EOS, FIXED_SPECIALS, tokenizer_hash
from kiln.train.manifest import write_manifest
from kiln.transfer.hf import from_hf, model_config_from_hf, unit_norms_dropped


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise KilnError(f"{path} is not valid JSON ({e})") from None


def _inside(name: str) -> bool:
    """Whether a file name from an index stays inside its folder (relative, no '..', no drive)."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return bool(parts) and not PurePosixPath(name).is_absolute() and ".." not in parts and ":" not in parts[0]


def read_hf_weights(folder: Path) -> dict[str, torch.Tensor]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        weight_map = _read_json(index).get("weight_map", {})
        files = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        for name in files:
            # by name, not by resolving: a hub snapshot's files are links into its blob store
            if not isinstance(name, str) or not _inside(name):
                raise KilnError(f"{index} names the weight file {name!r}, outside {folder}; refused")
    else:
        files = ["model.safetensors"]
        if not (folder / files[0]).exists():
            raise KilnError(f"{folder} holds no model.safetensors (or index); kiln imports safetensors weights only")
    weights: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            weights.update(load_file(str(folder / name)))
        except (SafetensorError, OSError) as e:
            raise KilnError(f"{folder / name} is corrupt, truncated or missing ({e})") from None
    return weights


def _kiln_tokenizer(folder: Path, hf: dict[str, Any]) -> tuple[Tokenizer, dict[str, int]]:
    """The folder's tokenizer with kiln's special tokens (added when missing), and for each added
    one the id of the token whose embedding row it starts from (-1: the mean row)."""
    path = folder / "tokenizer.json"
    if not path.exists():
        raise KilnError(f"{folder} has no tokenizer.json (a fast tokenizer); kiln needs one")
    data = _read_json(path)
    processor = data.get("post_processor") or {}
    if processor.get("type") == "TemplateProcessing" and [
        s.get("SpecialToken", {}).get("id") for s in processor["single"]
    ][:1] == [BOS]:
        data["post_processor"] = None  # the one kiln's export adds: kiln adds <|bos|> itself
    tok = Tokenizer.from_str(json.dumps(data))
    own_config = folder / "tokenizer_config.json"
    names = _read_json(own_config) if own_config.exists() else {}

    def token_id(key: str, config_key: str) -> int:
        value = names.get(key)
        content = value.get("content") if isinstance(value, dict) else value
        found = tok.token_to_id(content) if isinstance(content, str) else None
        fallback = hf.get(config_key)
        return found if found is not None else (fallback if isinstance(fallback, int) else -1)

    seed_rows = {BOS: token_id("bos_token", "bos_token_id"), EOS: token_id("eos_token", "eos_token_id")}
    missing = [name for name in FIXED_SPECIALS if tok.token_to_id(name) is None]
    added: dict[str, int] = {}
    if missing:
        tok.add_special_tokens([AddedToken(name, special=True, normalized=False) for name in missing])
        for name in missing:
            added[name] = seed_rows.get(name, -1)
    return tok, {f"{tok.token_to_id(n)}": row for n, row in added.items()}


IMPORTED = {TOKENIZER, CONFIG, "checkpoints"}
"""What an import writes in its run directory."""
STAGED_IMPORT = f"{STAGED}import"
"""Where an import into an existing empty folder builds the run."""


def import_hf(folder: Path, run_dir: Path) -> dict[str, Any]:
    """Import the Llama folder `folder` as the new run directory `run_dir` (absent or empty); returns
    what was written. The run is built in a staged folder (a `.staged-` sibling; inside `run_dir` when
    it exists, e.g. an empty mount point) and moved into place when whole, so a failed or killed
    import leaves nothing under `run_dir`'s names (the next one clears what it staged)."""
    target = Path(run_dir).expanduser().resolve()
    inside = target.is_dir()
    staged = target / STAGED_IMPORT if inside else target.with_name(f"{STAGED}{target.name}")
    if target.exists() and (not inside or any(p.name != STAGED_IMPORT for p in target.iterdir())):
        raise KilnError(f"--run-dir {run_dir} exists already and is not empty; import into a new --run-dir")
    if staged.exists():
        strays = sorted(p.name for p in staged.iterdir() if p.name not in IMPORTED)
        if strays:
            raise KilnError(f"{staged} holds files an import does not write ({strays[0]}): not deleting it")
        shutil.rmtree(staged)
    try:
        result = _import_into(Path(folder), RunDir(staged))
        sync_tree(staged)  # on disk before it takes the run's name (a power loss, not only a kill)
        if inside:
            for entry in staged.iterdir():
                os.replace(entry, target / entry.name)
            staged.rmdir()
            sync(target)
        else:
            rename_synced(staged, target)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise
    return {**result, "checkpoint": str(target / "checkpoints" / "step_0")}


def _import_into(folder: Path, run: RunDir) -> dict[str, Any]:
    config_path = folder / "config.json"
    if not config_path.exists():
        raise KilnError(f"{folder} has no config.json: pass a Hugging Face model folder")
    hf = _read_json(config_path)
    model_cfg = model_config_from_hf(hf)
    tok, seeded = _kiln_tokenizer(folder, hf)
    weights, norm_params = unit_norms_dropped(from_hf(read_hf_weights(folder), model_cfg), model_cfg)
    model_cfg = replace(model_cfg, norm_params=norm_params)
    vocab = max(model_cfg.vocab_size, tok.get_vocab_size())
    if vocab > model_cfg.vocab_size:  # rows for kiln's special tokens
        grow = vocab - model_cfg.vocab_size
        for name in ("embed.weight",) + (() if model_cfg.tie_embeddings else ("head.weight",)):
            old = weights[name]
            new = old.mean(0, keepdim=True).repeat(grow, 1)
            weights[name] = torch.cat([old, new], dim=0)
            for new_id, row in seeded.items():
                if row >= 0 and int(new_id) >= model_cfg.vocab_size:
                    weights[name][int(new_id)] = old[row]
        model_cfg = replace(model_cfg, vocab_size=vocab)
    base = cpu()
    cfg = replace(
        base,
        preset="imported",
        model=model_cfg,
        tokenizer=replace(base.tokenizer, vocab_size=tok.get_vocab_size(), num_sentinels=_sentinels(tok)),
        train=replace(
            base.train, seq_len=_context(folder, base.train.seq_len, model_cfg.max_seq_len), size_from_budget=False
        ),
    )
    ckpt = run.checkpoints / "step_0"
    ckpt.mkdir(parents=True)
    tok.save(str(run.tokenizer))
    shutil.copyfile(run.tokenizer, ckpt / TOKENIZER)
    # a tied head is stored once, under the embedding's name, as kiln's own checkpoints store it
    tensors = {k: v.contiguous() for k, v in weights.items() if not (model_cfg.tie_embeddings and k == "head.weight")}
    save_tensors(tensors, ckpt / "model.safetensors")
    saved = to_dict(cfg)
    (ckpt / CONFIG).write_text(json.dumps(saved, indent=2) + "\n")
    run.config.write_text(json.dumps(saved, indent=2) + "\n")
    state = {
        "step": 0,
        "tokens_seen": 0,
        "tokenizer_sha256": tokenizer_hash(ckpt / TOKENIZER),
        "imported_from": str(folder),
    }
    (ckpt / STATE).write_text(json.dumps(state, indent=2) + "\n")
    write_manifest(ckpt)
    params = sum(v.numel() for k, v in weights.items() if not (model_cfg.tie_embeddings and k == "head.weight"))
    return {
        "params": params,
        "vocab_size": vocab,
        "added_special_tokens": sorted(seeded),
        "model": f"{model_cfg.num_layers} x {model_cfg.dim}, {model_cfg.num_heads} heads "
        f"({model_cfg.num_kv_heads} kv), MLP {model_cfg.hidden_dim}",
    }


def _sentinels(tok: Tokenizer) -> int:
    n = 0
    while tok.token_to_id(f"<|sentinel_{n}|>") is not None:
        n += 1
    return n


def _context(folder: Path, default: int, max_len: int) -> int:
    """The training context: tokenizer_config.json's model_max_length when it fits (kiln's export writes
    the one it trained with), else the cpu preset's, at most the model's max_position_embeddings."""
    path = folder / "tokenizer_config.json"
    stated = _read_json(path).get("model_max_length") if path.exists() else None
    return min(stated if isinstance(stated, int) and 0 < stated <= max_len else default, max_len)
