"""A checkpoint's manifest: each file with its size and sha256, written once the files are, and the
check a resume, a conversion or an evaluation makes before trusting them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from kiln.rundir import MANIFEST
from kiln.staging import file_sha256


def write_manifest(folder: Path) -> None:
    """manifest.json: each file of the checkpoint `folder` with its size and sha256."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": file_sha256(p)} for p in files}
    (folder / MANIFEST).write_text(json.dumps({"files": entries}, indent=1) + "\n")


def verify_checkpoint(path: Path) -> str | None:
    """None if every file the manifest lists is present with its size and sha256; else what is wrong."""
    try:
        entries = json.loads((path / MANIFEST).read_text())["files"]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return "no readable manifest.json"
    if not isinstance(entries, dict):
        return "a manifest.json whose files are not a table"
    for name, want in entries.items():
        problem = _file_problem(path, name, want)
        if problem is not None:
            return f"{name} {problem}"
    return None


def _file_problem(folder: Path, name: str, want: Any) -> str | None:
    """None if the file `name` of `folder` has the size and sha256 of its manifest entry `want`; else
    what is wrong. A name outside the folder (absolute, `..`, through a link) or that is no regular
    file is wrong: a crafted manifest must not have kiln read /dev/zero or another folder's file."""
    f = folder / name
    if Path(name).is_absolute() or ".." in Path(name).parts or not f.resolve().is_relative_to(folder.resolve()):
        return "is not a file inside the checkpoint"
    if not isinstance(want, dict) or not isinstance(want.get("bytes"), int) or not isinstance(want.get("sha256"), str):
        return "has no size and sha256 in the manifest"
    if not f.exists():
        return "is missing"
    if not f.is_file():
        return "is not a regular file"
    if f.stat().st_size != want["bytes"] or file_sha256(f) != want["sha256"]:
        return "does not match its checksum"
    return None


def matches_manifest(folder: Path, name: str) -> bool:
    """Whether file `name` of a checkpoint has the size and sha256 its manifest lists."""
    try:
        want = json.loads((folder / MANIFEST).read_text())["files"][name]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError):
        return False
    return _file_problem(folder, name, want) is None
