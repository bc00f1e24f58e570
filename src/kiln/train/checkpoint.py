"""Single-process checkpoints: written atomically, kept last-k, loaded without executing pickles.

``checkpoints/step_N/`` holds:
  model.safetensors    weights (shared tensors, e.g. tied embeddings, stored once)
  optimizer.pt         optimizer state (tensors and plain types; loaded with weights_only=True)
  rng.pt               torch RNG states
  state.json           step, loader position, token count, tokenizer hash
  config.json          the resolved run config
  tokenizer.json       the tokenizer, so a checkpoint is usable on its own

A checkpoint is written to ``.tmp_step_N`` and renamed into place only when complete, so a crash
mid-write never leaves a half checkpoint under a real name.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_model, save_model
from torch import nn

from kiln.errors import KilnError

STEP_PREFIX = "step_"


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.exists():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(STEP_PREFIX) and (p / "state.json").exists()]
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX):]))


def save_checkpoint(root: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer,
                    state: dict[str, Any], config: dict[str, Any], tokenizer_path: Path, keep: int) -> Path:
    """Write checkpoint `step` atomically and delete all but the newest `keep`."""
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{STEP_PREFIX}{step}"
    tmp = root / f".tmp_{STEP_PREFIX}{step}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_model(model, str(tmp / "model.safetensors"))
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    rng = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state_all()
    torch.save(rng, tmp / "rng.pt")
    (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    shutil.copyfile(tokenizer_path, tmp / "tokenizer.json")
    (tmp / "state.json").write_text(json.dumps(dict(state, step=step), indent=2) + "\n")
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoint_dirs(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(old)
    return final


def read_state(path: Path) -> dict[str, Any]:
    """state.json of a checkpoint, with a clear error when it is not one."""
    path = Path(path)
    try:
        return json.loads((path / "state.json").read_text())
    except FileNotFoundError:
        raise KilnError(f"{path} is not a kiln checkpoint (no state.json); pass a checkpoints/step_N directory") from None
    except json.JSONDecodeError:
        raise KilnError(f"checkpoint {path} has a corrupt state.json; use an earlier checkpoint") from None


def load_weights(path: Path, model: nn.Module) -> None:
    """Load model.safetensors into `model` (strict: every tensor must match)."""
    file = Path(path) / "model.safetensors"
    if not file.exists():
        raise KilnError(f"checkpoint {path} has no model.safetensors; pass a complete checkpoint directory")
    try:
        missing, unexpected = load_model(model, str(file), strict=False)
    except SafetensorError as e:
        raise KilnError(f"checkpoint {file} is corrupt or truncated ({e}); use an earlier checkpoint") from None
    except (RuntimeError, OSError, ValueError) as e:
        raise KilnError(f"checkpoint {file} does not fit this model ({str(e).splitlines()[0]}); "
                        "use the config saved with it") from None
    if missing or unexpected:
        raise KilnError(f"checkpoint {file} does not fit this model (missing {missing}, unexpected {unexpected})")


def load_training_state(path: Path, optimizer: torch.optim.Optimizer) -> None:
    """Restore optimizer and RNG states; never unpickles code (weights_only=True)."""
    path = Path(path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu"))
    rng = torch.load(path / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["cpu"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def latest_checkpoint(root: Path) -> Path | None:
    dirs = checkpoint_dirs(root)
    return dirs[-1] if dirs else None
