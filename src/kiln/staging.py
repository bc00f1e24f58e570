"""A stage's output folder that only complete work replaces: nothing is lost when a stage fails.

Every stage that writes a folder of files and a manifest (curated documents, token shards, curated
images, image shards) writes its new files under hidden staged names (`StagedFolder.path`) beside the
last output, and only once everything is written and checked does `publish` swap them in: the old
manifest is removed first and the new one written last, so a crash during the swap leaves a folder
that readers refuse (no manifest), never a mix of two runs. A missing corpus, a bad document, a check
that refuses the result or Ctrl-C ends in `discard`, which removes the staged files and nothing else.
Opening a folder removes what an interrupted run staged in it.

A stage that replaces several folders (text and image shards, curated text and images) hands its
writers one `Publication`: each writer stages its folder and adds it there instead of publishing,
and the stage publishes them all once every writer has finished, or discards them all, so a failure
in a later folder leaves every earlier one as it was too. `file_sha256` is the checksum published
files are recorded and checked with (checkpoint manifests, kiln_export.json).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kiln.rundir import MANIFEST

STAGED = ".staged-"
"""Prefix of a file written but not yet published."""


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in blocks (a checkpoint's or an export's weights may not fit in memory twice)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class StagedFolder:
    """The staged files of one stage's output `folder`, published together or discarded."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.names: list[str] = []
        self.discard()

    def path(self, name: str) -> Path:
        """Where to write the file that `publish` names `name` (a plain name inside the folder)."""
        if name in self.names:
            raise ValueError(f"{name} is staged twice")
        self.names.append(name)
        return self.folder / f"{STAGED}{name}"

    def publish(self, replaces: Iterable[str], manifest: dict[str, Any] | None = None) -> None:
        """Remove the last output (the manifest, then every file matching a glob of `replaces`), move
        the staged files to their names, and write `manifest` (as manifest.json) last."""
        (self.folder / MANIFEST).unlink(missing_ok=True)
        for pattern in replaces:
            for old in self.folder.glob(pattern):
                if old.is_file() and not old.name.startswith(STAGED):
                    old.unlink()
        for name in self.names:
            os.replace(self.folder / f"{STAGED}{name}", self.folder / name)
        self.names = []
        if manifest is not None:
            staged = self.folder / f"{STAGED}{MANIFEST}"
            staged.write_text(json.dumps(manifest, indent=2) + "\n")
            os.replace(staged, self.folder / MANIFEST)

    def publish_in(
        self,
        publication: Publication | None,
        replaces: Iterable[str],
        manifest: dict[str, Any] | None = None,
        then: Callable[[], object] | None = None,
    ) -> None:
        """`publish` now and run `then` (without a publication), or once `publication` publishes."""
        if publication is None:
            self.publish(replaces, manifest)
            if then is not None:
                then()
        else:
            publication.add(self, list(replaces), manifest, then)

    def discard(self) -> None:
        """Remove every staged file in the folder (this run's and an interrupted one's)."""
        for staged in self.folder.glob(f"{STAGED}*"):
            staged.unlink()
        self.names = []


class Publication:
    """Staged folders of one stage, published together (`publish`) or discarded together (`discard`);
    as a context manager, published when the block ends and discarded when it raises."""

    def __init__(self) -> None:
        self.ready: list[tuple[StagedFolder, list[str], dict[str, Any] | None, Callable[[], object] | None]] = []

    def __enter__(self) -> Publication:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.publish()
        else:
            self.discard()

    def add(
        self,
        staging: StagedFolder,
        replaces: list[str],
        manifest: dict[str, Any] | None,
        then: Callable[[], object] | None = None,
    ) -> None:
        """A folder whose staged files are complete and checked; `then` runs after every folder is published."""
        self.ready.append((staging, replaces, manifest, then))

    def publish(self) -> None:
        for staging, replaces, manifest, _ in self.ready:
            staging.publish(replaces, manifest)
        for *_, then in self.ready:
            if then is not None:
                then()
        self.ready = []

    def discard(self) -> None:
        for staging, *_ in self.ready:
            staging.discard()
        self.ready = []
