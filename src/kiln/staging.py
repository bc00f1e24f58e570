"""A stage's output folder that only complete work replaces: nothing is lost when a stage fails or dies.

Every stage that writes a folder of files and a manifest (curated documents with their dropped samples
and data card, token shards, curated images, image shards) writes its new files under hidden staged
names (`StagedFolder.path`: `.staged-` before the file's name) beside the last output, and only once
everything is written and checked does it publish them. A missing corpus, a bad document, a check that
refuses the result or Ctrl-C ends in `discard`, which removes the staged files and nothing else.

Publishing is a journal, so a process killed while it moves files loses nothing either: each folder
first gets a plan (`.publishing.json`: the files to move, the globs of the last output they replace,
the manifest, the folders published with it), written under a staged name and committed by a rename;
then the old manifest goes, the replaced files go, the staged files take their names, the new manifest
is written last and the plan removed. Opening a folder (`StagedFolder`, `recover`) finishes a committed
plan and removes what an uncommitted run staged; readers refuse a folder without a manifest meanwhile.

A stage that replaces several folders (text and image shards, curated text and images) hands its
writers one `Publication`: each writer stages its folder and adds it there instead of publishing, and
the stage publishes them all once every writer has finished, or discards them all. The first folder's
committed plan commits the whole set: opening any of them finishes every folder whose plan names it,
so a failure or a crash leaves every folder of the set old, or every one new. `file_sha256` is the
checksum published files are recorded and checked with (checkpoint manifests, kiln_export.json);
`write_whole` writes one file whole or not at all (stages.json, metrics.jsonl on resume, task results).

Every rename that publishes is made durable (`sync`, fsync): the files it publishes are on disk before
it, and their folder's entries after it, so a power loss, not only a killed process, leaves the last
output or the new one (checkpoints and exports publish the same way).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from kiln.errors import KilnError
from kiln.rundir import MANIFEST, OVERWRITTEN

STAGED = ".staged-"
"""Prefix of a file written but not yet published."""
PLAN = ".publishing.json"
"""A folder's committed publication, present only while its files move (see the module's docstring)."""
STAGED_PLAN = f"{STAGED}publishing.json"
"""The plan before it is committed (a crash here leaves the last output, unless another folder of the
same publication committed)."""


def file_sha256(path: Path) -> str:
    """sha256 of a file, read in blocks (a checkpoint's or an export's weights may not fit in memory twice)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sync(path: Path) -> None:
    """Flush the file `path`'s data, or the folder `path`'s entries (files renamed into or out of it),
    to the disk (fsync), so that a rename after it, or the renames before it, survive a power loss."""
    folder = path.is_dir()
    if os.name == "nt" and folder:  # Windows opens no folder for fsync; NTFS journals renames
        return
    fd = os.open(path, os.O_RDWR if os.name == "nt" else os.O_RDONLY)  # Windows flushes only a writable handle
    try:
        os.fsync(fd)
        if sys.platform == "darwin" and not folder:  # macOS's fsync leaves the data in the drive's cache
            import fcntl

            with contextlib.suppress(OSError):  # a file system without it (SMB) has had its fsync
                fcntl.fcntl(fd, fcntl.F_FULLFSYNC)
    except OSError as e:  # SMB, VirtualBox and some FUSE mounts refuse a folder's fsync: they order renames
        if not folder or e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def sync_tree(folder: Path) -> None:
    """`sync` every file and folder under `folder`, and `folder` itself (a checkpoint before its rename)."""
    for path in sorted(folder.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_file() or path.is_dir():
            sync(path)
    sync(folder)


def rename_synced(staged: Path, path: Path) -> None:
    """Rename the finished file or folder `staged` to `path` durably: synced before (a folder's files
    by `sync_tree` first), the folder it lands in after."""
    sync(staged)
    os.replace(staged, path)
    sync(path.parent)


def remove_path(path: Path) -> None:
    """Delete a file, a link (never what it points to) or a folder kiln made; nothing if it is absent."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _umask() -> int:
    """The process's umask, read without setting it (os.umask would change it for other threads)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


def save_tensors(tensors: dict[str, Any], path: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file, with the permissions any other file gets (it creates its file readable
    by the owner only, so a shared export or checkpoint could not be read by the others it is for)."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata=metadata)
    if os.name != "nt":
        os.chmod(path, 0o666 & ~_umask())


def write_whole(path: Path, text: str) -> None:
    """Write the text file `path` whole or not at all (written under its staged name, synced, then
    renamed): a reader, or the next run after a crash or a power loss, never finds half of it, and a
    link left at its name (a run directory from someone else) is replaced, never written through."""
    write_whole_with(path, lambda staged: staged.write_text(text))


def write_whole_with(path: Path, write: Callable[[Path], object]) -> None:
    """`write_whole` for a file another library writes (`write(staged)`: a plot's savefig, say)."""
    staged = path.with_name(f"{STAGED}{path.name}")
    staged.unlink(missing_ok=True)  # a new file: never written through a link left at its name
    try:
        write(staged)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    rename_synced(staged, path)


def _inside(name: object, hidden: bool = False) -> bool:
    """Whether `name` is a relative path (or glob) that stays inside its folder: no `..`, not absolute;
    and unless `hidden`, its last part does not start with a dot (kiln's own bookkeeping)."""
    if not isinstance(name, str) or not name:
        return False
    path = Path(name)
    return not path.is_absolute() and ".." not in path.parts and (hidden or not path.name.startswith("."))


def _within(path: Path, folder: Path) -> bool:
    """Whether `path`, links resolved, is inside `folder` (a subfolder may be a link to elsewhere)."""
    return path.resolve().is_relative_to(folder.resolve())


def _staged(folder: Path, name: str) -> Path:
    """Where the file published as `name` (a relative path, e.g. `dropped/quality.jsonl`) is staged."""
    path = folder / name
    return path.with_name(f"{STAGED}{path.name}")


class StagedFolder:
    """The staged files of one stage's output `folder`, published together or discarded. Opening it
    finishes an interrupted publication and removes files an interrupted run staged."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.names: list[str] = []
        recover(folder)
        self.discard()

    def path(self, name: str) -> Path:
        """Where to write the file that `publish` names `name` (a path inside the folder, made here)."""
        if name in self.names:
            raise ValueError(f"{name} is staged twice")
        if not _inside(name):
            raise ValueError(f"{name}: a staged file is a plain path inside its folder")
        staged = _staged(self.folder, name)
        staged.parent.mkdir(parents=True, exist_ok=True)
        if not _within(staged.parent, self.folder):
            raise KilnError(f"{staged.parent} is a link out of {self.folder}: move it away, then run the stage again")
        self.names.append(name)
        return staged

    def publish(self, replaces: Iterable[str], manifest: dict[str, Any] | None = None) -> None:
        """Replace the last output (the manifest, then every file matching a glob of `replaces`) with the
        staged files, and write `manifest` (as manifest.json) last."""
        publication = Publication()
        publication.add(self, list(replaces), manifest)
        publication.publish()

    def publish_in(
        self, publication: Publication | None, replaces: Iterable[str], manifest: dict[str, Any] | None = None
    ) -> None:
        """`publish` now, or with `publication` when it publishes."""
        if publication is None:
            self.publish(replaces, manifest)
        else:
            publication.add(self, list(replaces), manifest)

    def discard(self) -> None:
        """Remove every staged file in the folder (this run's and an interrupted one's)."""
        for staged in self.folder.rglob(f"{STAGED}*"):
            if OVERWRITTEN in staged.relative_to(self.folder).parts:  # an earlier run kept aside (kiln.freshstart)
                continue
            if staged.is_file() or staged.is_symlink():  # a link too: nothing is written through it
                staged.unlink()
        self.names = []


class Publication:
    """Staged folders of one stage, published together (`publish`) or discarded together (`discard`);
    as a context manager, published when the block ends and discarded when it raises."""

    def __init__(self) -> None:
        self.ready: list[tuple[StagedFolder, list[str], dict[str, Any] | None]] = []

    def __enter__(self) -> Publication:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self.publish()
        else:
            self.discard()

    def add(self, staging: StagedFolder, replaces: list[str], manifest: dict[str, Any] | None) -> None:
        """A folder whose staged files are complete and checked."""
        self.ready.append((staging, replaces, manifest))

    def publish(self) -> None:
        """Commit every folder's plan, then move each folder's files. Once the first plan is committed,
        a failure here leaves the rest for the next open to finish (`recover`), never discarded."""
        group = secrets.token_hex(8)
        folders = [staging.folder for staging, *_ in self.ready]
        plans = []
        try:
            for staging, replaces, _ in self.ready:
                _check_ours(staging.folder, replaces, staging.names)
            for staging, replaces, manifest in self.ready:
                here = staging.folder.resolve()  # resolved: a symlinked folder's partners stay found
                partners = [os.path.relpath(f.resolve(), here) for f in folders if f != staging.folder]
                plan = {"id": group, "names": staging.names, "replaces": replaces, "manifest": manifest}
                plan["with"] = partners
                (staging.folder / STAGED_PLAN).write_text(json.dumps(plan, indent=2) + "\n")
                plans.append(plan)
                staged = [_staged(staging.folder, name) for name in staging.names]
                for path in [*staged, staging.folder / STAGED_PLAN]:
                    sync(path)  # on disk before anything commits to them
                for parent in {path.parent for path in staged} | {staging.folder}:
                    sync(parent)
        except BaseException:  # nothing committed yet (a full disk): the last output stays
            self.discard()
            raise
        for folder in folders:  # the first rename commits every folder of the set
            os.replace(folder / STAGED_PLAN, folder / PLAN)
            sync(folder)
        _complete([(staging.folder, plan) for (staging, *_), plan in zip(self.ready, plans)])
        for staging, *_ in self.ready:
            staging.names = []
        self.ready = []

    def discard(self) -> None:
        for staging, *_ in self.ready:
            staging.discard()
        self.ready = []


def _published_by_kiln(folder: Path) -> bool:
    """Whether `folder`'s manifest is one a kiln stage published ("format": "kiln-...")."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(manifest, dict) and str(manifest.get("format", "")).startswith("kiln-")


def _elsewhere(folder: Path) -> bool:
    """Whether `folder` is reached through a link, or is another file system's mount: a folder kiln
    may not have made (a run directory's own folders are kiln's; a link in one may be anyone's)."""
    return folder.resolve() != Path(os.path.abspath(folder)) or os.path.ismount(folder)


def _check_ours(folder: Path, replaces: list[str], names: list[str]) -> None:
    """Refuse, before anything moves, to replace files in a folder reached through a link or mounted
    that no kiln stage published (a link to a folder of the user's, left in a run directory from
    someone else): the files its globs match or its new names hit."""
    if not _elsewhere(folder) or _published_by_kiln(folder):
        return
    hit = [p for pattern in replaces for p in folder.glob(pattern) if not p.name.startswith(".") and p.is_file()]
    hit += [folder / name for name in names if (folder / name).exists() or (folder / name).is_symlink()]
    if hit:
        raise KilnError(
            f"{folder} holds {hit[0].relative_to(folder)}, which no kiln stage published there (no kiln "
            f"{MANIFEST}): nothing was replaced; move it away, or point {folder.name} at a new folder"
        )


def _read_plan(path: Path) -> dict[str, Any] | None:
    """The plan at `path`, or None: none, one cut short (not committed), or one kiln would not have
    written (a file reaching outside its folder, a manifest that is not an object), which is ignored:
    a plan found in a folder deletes and moves files, so it acts only inside that folder."""
    try:
        plan = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # none, or a staged plan cut short: not committed
        return None
    if not isinstance(plan, dict) or not {"id", "names", "replaces", "manifest", "with"} <= plan.keys():
        return None
    lists = all(isinstance(plan[key], list) for key in ("names", "replaces", "with"))
    if (
        not lists
        or not isinstance(plan["id"], str)
        or not all(_inside(name) for name in plan["names"])
        or not all(_inside(pattern, hidden=True) for pattern in plan["replaces"])
        or not all(isinstance(other, str) and not Path(other).is_absolute() for other in plan["with"])
        or not (plan["manifest"] is None or isinstance(plan["manifest"], dict))
    ):
        print(f"warning: {path} is not a publication kiln wrote; ignored (delete it)", file=sys.stderr)
        return None
    return plan


def recover(folder: Path) -> bool:
    """Finish a publication a crash interrupted once it was committed: in `folder`, or in a folder
    published with it (then every folder of the set whose plan is still there); whether there was one."""
    plan = _read_plan(folder / PLAN)
    if plan is None:
        plan = _read_plan(folder / STAGED_PLAN)
        if plan is None or not any(_plan_id(_partner(folder, other) / PLAN) == plan["id"] for other in plan["with"]):
            return False  # not committed (or no plan): the staged files are discarded
    assert plan is not None
    members = []
    for member in [folder, *(_partner(folder, other) for other in plan["with"])]:
        for name in (PLAN, STAGED_PLAN):
            found = _read_plan(member / name)
            if found is not None and found["id"] == plan["id"]:
                print(f"finishing the publication of {member} that an interrupted run began", file=sys.stderr)
                members.append((member, found))
                break
    _complete(members)
    return True


def _plan_id(path: Path) -> str | None:
    plan = _read_plan(path)
    return None if plan is None else plan["id"]


def _partner(folder: Path, relative: str) -> Path:
    return Path(os.path.normpath(folder.resolve() / relative))


def _complete(members: list[tuple[Path, dict[str, Any]]]) -> None:
    """Move every folder's staged files in place of its last output as its plan says. Every manifest
    goes first, the new ones are written once every file has moved, and every plan goes last: no
    folder of the set reads as ready with new files beside one that reads as ready with old ones, and
    until the set is done each still has the plan the next open finishes; run again after a crash
    part-way, it does the rest (files already moved are the new ones and stay)."""
    for folder, _ in members:
        (folder / MANIFEST).unlink(missing_ok=True)
        sync(folder)  # gone before any file moves, on disk too
    whole = [_move(folder, plan) for folder, plan in members]
    for (folder, plan), ok in zip(members, whole):
        if ok and plan["manifest"] is not None:
            write_whole(folder / MANIFEST, json.dumps(plan["manifest"], indent=2) + "\n")
    for folder, _ in members:
        (folder / PLAN).unlink(missing_ok=True)
        (folder / STAGED_PLAN).unlink(missing_ok=True)
        sync(folder)


def _move(folder: Path, plan: dict[str, Any]) -> bool:
    """One folder's staged files to their names, the replaced ones removed, the folders touched synced
    (before the manifest says the moves are done); whether none was lost."""
    new, touched = set(plan["names"]), {folder}
    for pattern in plan["replaces"]:
        for old in folder.glob(pattern):
            if old.name.startswith(".") or old.relative_to(folder).as_posix() in new:
                continue
            if old.is_file() and _within(old.parent, folder):  # never through a linked subfolder
                old.unlink()
                touched.add(old.parent)
    names = [name for name in plan["names"] if _within((folder / name).parent, folder)]
    lost = [name for name in names if not _staged(folder, name).exists() and not (folder / name).exists()]
    lost += [name for name in plan["names"] if name not in names]
    for name in names:
        if _staged(folder, name).exists():
            os.replace(_staged(folder, name), folder / name)
            touched.add((folder / name).parent)
    for parent in touched:
        sync(parent)
    if lost:  # deleted by hand: the folder stays without a manifest, which readers refuse (run the stage again)
        print(f"warning: {folder}: the staged {lost[0]} of a publication is gone; run the stage again", file=sys.stderr)
    return not lost
