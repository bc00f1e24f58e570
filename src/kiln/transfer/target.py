"""Where `kiln export` writes: a target it may replace, written beside it first, put in place once checked.

An export is written under a hidden staged name next to `out` (`.staged-NAME`), verified there, and
only then moved into place, so an export that fails (or whose verification fails, or that is
interrupted) leaves the last export as it was. Nothing that kiln did not write is replaced: a folder
target must be new, empty or a folder kiln exported before (it holds kiln_export.json), and a file
target must be new or a GGUF file. In a folder kiln exported before, the files kiln writes are
replaced one by one (kiln_export.json last, so it is always there), the last export's files this one
does not write are removed, and any file a person added stays.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from kiln.errors import KilnError
from kiln.staging import STAGED

RECORD = "kiln_export.json"
"""What an export wrote and measured; it marks a folder as kiln's to replace."""
HF_FILES = frozenset(
    {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "generation_config.json",
        "README.md",
        RECORD,
    }
)
"""Every file an HF export may write (tests hold export_hf to it)."""
GGUF_MAGIC = b"GGUF"


def staged_path(out: Path) -> Path:
    """The hidden sibling an export of `out` is written to first."""
    out = out.absolute()
    if not out.name:
        raise KilnError(f"cannot export to {out}: name a folder or file to write")
    return out.with_name(f"{STAGED}{out.name}")


def check_target(out: Path, fmt: str) -> None:
    """Refuse a target that holds something kiln did not export (a typo'd path must not cost a file)."""
    if not out.exists():
        return
    if fmt == "hf":
        if not out.is_dir():
            raise KilnError(f"{out} is a file; `kiln export --to hf` writes a folder: name a new or empty one")
        if any(out.iterdir()) and not (out / RECORD).is_file():
            example = next(iter(sorted(p.name for p in out.iterdir())))
            raise KilnError(
                f"{out} holds files kiln did not export (e.g. {example}; no {RECORD}): nothing was written; "
                "name a new or empty folder"
            )
    elif not out.is_file() or not _is_gguf(out):
        raise KilnError(f"{out} exists and is not a GGUF file: nothing was written; name a new .gguf file")


def clear_staged(staged: Path, fmt: str) -> None:
    """Remove what an interrupted export left at `staged`, once it is sure to be an export's."""
    if not staged.exists():
        return
    if fmt == "hf" and staged.is_dir() and all(p.is_file() and p.name in HF_FILES for p in staged.iterdir()):
        shutil.rmtree(staged)
    elif fmt == "gguf" and staged.is_file() and (staged.stat().st_size == 0 or _is_gguf(staged)):
        staged.unlink()
    else:
        raise KilnError(f"{staged} is in the way of the export and is not one kiln left behind: move it away")


def put_in_place(staged: Path, out: Path, fmt: str, result: dict[str, Any]) -> None:
    """Move the checked export at `staged` to `out`, recording `result` (with its files) in the folder."""
    if fmt == "gguf":
        os.replace(staged, out)
        return
    files = sorted(p.name for p in staged.iterdir() if p.name != RECORD)
    (staged / RECORD).write_text(json.dumps({**result, "files": files}, indent=2) + "\n")
    if not out.exists():
        os.replace(staged, out)
        return
    try:
        last = set(json.loads((out / RECORD).read_text()).get("files", []))
    except (OSError, ValueError, AttributeError):
        last = set()
    for name in files:
        os.replace(staged / name, out / name)
    for name in (last & HF_FILES) - set(files) - {RECORD}:  # the last export's files this one does not write
        (out / name).unlink(missing_ok=True)
    os.replace(staged / RECORD, out / RECORD)
    staged.rmdir()


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == GGUF_MAGIC
