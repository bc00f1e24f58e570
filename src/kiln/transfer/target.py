"""Where `kiln export` writes: a target it may replace, written beside it first, put in place once checked.

An export is written under a hidden staged name next to `out` (`.staged-NAME`), verified there, and
only then moved into place, so an export that fails (or whose verification fails, or that is
interrupted) leaves the last export as it was. Nothing that kiln did not write is replaced: a folder
target must be new, empty or a folder kiln exported before (it holds kiln_export.json, which lists
each file's sha256), and a file target must be new or a GGUF file kiln wrote (its general.name
starts with "kiln "). In a folder kiln exported before, the files kiln writes are replaced one by
one (kiln_export.json last, so it is always there) and the last export's files this one does not
write are removed; a file a person added or changed under one of those names (an edited README.md)
stops the export before anything moves, and any other file a person added stays. Before its first
file moves, the export lists in the folder (PENDING) the sha256 each file may have meanwhile, so an
export interrupted among those renames is finished by the next one, not mistaken for a person's edits.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path
from typing import Any

from kiln.errors import KilnError
from kiln.staging import STAGED, file_sha256, rename_synced, sync, sync_tree, write_whole

RECORD = "kiln_export.json"
"""What an export wrote and measured; it marks a folder as kiln's to replace."""
PENDING = ".kiln_export.pending.json"
"""In a folder an export is moving its files into: the sha256 each of them may have meanwhile (the
last export's or this one's), so that an export interrupted there is finished by the next."""
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
GGUF_NAME_PREFIX = "kiln "
"""How kiln's GGUF files begin their general.name (transfer/gguf.py): a GGUF file kiln may replace."""


def staged_path(out: Path) -> Path:
    """The hidden sibling an export of `out` is written to first."""
    out = out.absolute()
    if not out.name:
        raise KilnError(f"cannot export to {out}: name a folder or file to write")
    return out.with_name(f"{STAGED}{out.name}")


def check_target(out: Path, fmt: str) -> None:
    """Refuse a target that holds something kiln did not export (a typo'd path must not cost a file),
    and a link where the export would replace the link itself (a GGUF file's; a link to nothing)."""
    if out.is_symlink() and (fmt == "gguf" or not out.exists()):
        raise KilnError(
            f"{out} is a link (to {os.readlink(out)}): nothing was written; export to the path it names, or a new one"
        )
    if not out.exists():
        return
    if fmt == "hf":
        if not out.is_dir():
            raise KilnError(f"{out} is a file; `kiln export --to hf` writes a folder: name a new or empty one")
        if any(out.iterdir()) and not (out / RECORD).is_file() and not (out / PENDING).is_file():
            example = next(iter(sorted(p.name for p in out.iterdir())))
            raise KilnError(
                f"{out} holds files kiln did not export (e.g. {example}; no {RECORD}): nothing was written; "
                "name a new or empty folder"
            )
    elif not out.is_file() or not _is_gguf(out):
        raise KilnError(f"{out} exists and is not a GGUF file: nothing was written; name a new .gguf file")
    elif not (name := gguf_name(out)).startswith(GGUF_NAME_PREFIX):
        raise KilnError(
            f"{out} is a GGUF file kiln did not export (general.name {name!r}): nothing was written; "
            "name a new .gguf file"
        )


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
    """Move the checked export at `staged` to `out`, recording `result` (with its files and their
    sha256) in the folder. Refuses, before moving anything, to replace or remove a file of `out`
    that kiln's last export did not write as it is now."""
    if fmt == "gguf":
        rename_synced(staged, out)  # each rename publishes only what is on disk (a power loss, not only a kill)
        return
    files = sorted(p.name for p in staged.iterdir() if p.name != RECORD)
    sums = {name: file_sha256(staged / name) for name in files}
    (staged / RECORD).write_text(json.dumps({**result, "files": files, "sha256": sums}, indent=2) + "\n")
    sync_tree(staged)
    if not out.exists():
        rename_synced(staged, out)
        return
    kilns = _kilns(out)  # each file kiln wrote there: the sha256 it may have (None: any, an older kiln's)
    stale = (set(kilns) & HF_FILES) - set(files) - {RECORD}  # the last export's files this one does not write
    theirs = [
        name
        for name in sorted(set(files) | stale)
        if (out / name).exists()
        and (name not in kilns or ((known := kilns[name]) is not None and file_sha256(out / name) not in known))
    ]
    if theirs:
        raise KilnError(
            f"{out} holds {', '.join(theirs)} as kiln's last export did not write it (added or changed since): "
            "nothing was replaced; move it away, or export to a new folder"
        )
    mine = {name: {sums[name]} for name in files}
    pending: dict[str, list[str] | None] = {
        name: None if known is None else sorted(known | mine.get(name, set())) for name, known in kilns.items()
    }
    pending.update({name: sorted(sha) for name, sha in mine.items() if name not in kilns})
    write_whole(out / PENDING, json.dumps({"sha256": pending}, indent=2) + "\n")  # before the first file moves
    for name in files:
        _move(staged / name, out / name)
    for name in stale:
        (out / name).unlink(missing_ok=True)
    sync(out)
    _move(staged / RECORD, out / RECORD)
    (out / PENDING).unlink()
    staged.rmdir()
    sync(out)


def _kilns(out: Path) -> dict[str, set[str] | None]:
    """The files kiln's exports wrote in `out`, each with the sha256 it may have (None: any, where an
    older kiln recorded no sum): the last export's (kiln_export.json), and those of an export
    interrupted while it moved its files in (PENDING), so that the next export finishes replacing them."""
    kilns: dict[str, set[str] | None] = {}
    try:
        record = json.loads((out / RECORD).read_text())
        sums = dict(record.get("sha256", {}))
        kilns = {str(name): {str(sums[name])} if name in sums else None for name in record.get("files", [])}
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    try:
        moving = json.loads((out / PENDING).read_text())["sha256"]
        for name, options in moving.items():
            if name not in HF_FILES or not isinstance(options, list):  # None ("any") only as the record says
                continue
            known = kilns.get(name, set())
            kilns[name] = None if known is None else known | {str(o) for o in options}
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        pass
    return kilns


def _move(src: Path, dst: Path) -> None:
    """os.replace, or where `dst` is on another file system (the target a mount point), a copy beside
    `dst` renamed over it."""
    try:
        os.replace(src, dst)
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(f"{STAGED}{dst.name}")
        shutil.copyfile(src, tmp)
        rename_synced(tmp, dst)
        src.unlink()


def _is_gguf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == GGUF_MAGIC


def gguf_name(path: Path) -> str:
    """A GGUF file's general.name ("" when it has none or cannot be read)."""
    try:
        from gguf import GGUFReader

        field = GGUFReader(path).fields.get("general.name")
        return bytes(field.parts[-1]).decode("utf-8", "replace") if field is not None else ""
    except ImportError:
        raise KilnError('reading a GGUF file needs the gguf package: pip install -e ".[transfer]"') from None
    except (ValueError, OSError, IndexError, KeyError):
        return ""
