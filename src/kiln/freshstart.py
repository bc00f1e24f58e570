"""A fresh start in a run directory (`kiln run`, `kiln train`, `kiln finetune` without --resume; over
an earlier run's checkpoints with --overwrite) that loses nothing until training accepts it.

`kiln run` writes a new corpus, tokenizer, shards and config before the trainer has checked the run
(its budget, its options, train.init_from), and an earlier run's checkpoints need the earlier files
to resume. So the fresh start first keeps what it will replace (`KEPT_BY_RUN`; `kiln train`: the
plan; `kiln finetune`: config, tokenizer and plan) in the run directory's `.overwritten/` folder,
with a list of what it holds: moved there (plan.json copied: the planner reuses a plan made for the
same config and machine). A folder that is a link or another file system's mount (a shards/ on a big
disk) stays where it is, and its entries are kept aside inside it, in its own `.overwritten/` (a
rename on its own file system; `INSIDE`); until acceptance it is the run's, as an unlinked one is (a
name the earlier run did not have there goes with a refusal). A link into the run directory, to a
folder holding it, or into another linked folder is refused. The list also names the earlier
checkpoints.
`accept` (the trainer, once every check has passed) puts back what the new run has not written (an
earlier curated/ when this run curates nothing), commits with one rename (`.overwritten/` ->
`.overwritten-dropped/`), then deletes the earlier checkpoints and files; a kill after that rename
is finished by the next kiln command. A refusal or an error before it puts every file back
(`restore`), and so does the next kiln command on the run directory after a crash: the folder is
there only while a fresh start is unaccepted.

A fresh start holds the run directory's lock (`.overwritten.lock`, an advisory lock the system drops
when its process ends, however it ends) from its first move to its acceptance: a second fresh start is
refused, and `restore` acts only when it can take the lock, so a running one is never undone and two
commands never put files back at once. Under torchrun only rank 0 does any of this. On a file
system without locks, only a fresh start puts a crash's leftovers back."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from kiln.errors import KilnError
from kiln.rundir import OVERWRITTEN, RunDir
from kiln.staging import STAGED, remove_path, rename_synced, sync, write_whole

ASIDE = OVERWRITTEN
"""The run directory's folder of what an unaccepted fresh start replaced."""
DROPPED = f"{OVERWRITTEN}-dropped"
"""The same folder once the fresh start was accepted, while it is deleted."""
LOCK = f"{OVERWRITTEN}.lock"
"""The run directory's lock, held by a fresh start until it is accepted or put back."""
LISTED = "kept.json"
"""In ASIDE: the names moved there (`kept`), those the earlier run did not have (`absent`), the linked or
mounted folders whose entries were kept aside inside them (`inside`: each folder's entries) and the
earlier checkpoints (`checkpoints`)."""
INSIDE = ASIDE
"""In a linked or mounted folder of KEPT_BY_RUN: its earlier entries, kept aside on its own file system."""
KEPT_BY_RUN = ("config.json", "stages.json", "plan.json", "tokenizer.json", "curated", "curated_images", "shards")
"""What `kiln run`'s data stages and planner write before training accepts a fresh start."""
COPIED = ("plan.json",)
"""Kept aside as a copy, the file staying in place: the planner reuses a plan made for the same config
and machine. Everything else is moved (a link as a link)."""


def _there(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def _movable(root: Path, name: str) -> bool:
    """Whether `name` can be kept aside by a rename: a file or a link to one, or a folder of the run
    directory's own file system (a linked or mounted shards/ stays: its entries are kept aside inside it)."""
    path = root / name
    if not path.is_dir():
        return True
    return not path.is_symlink() and not os.path.ismount(path) and path.stat().st_dev == root.stat().st_dev


def _inside_folders(root: Path, names: list[str]) -> dict[str, list[str]]:
    """The linked or mounted folders among `names` (one name per folder) and the entries each holds."""
    inside: dict[str, list[str]] = {}
    seen: set[Path] = set()
    here = root.resolve()
    for name in names:
        folder = (root / name).resolve()
        if folder in seen:  # two names linked to one folder: its entries are kept aside once
            continue
        if here.is_relative_to(folder) or (root / name).is_symlink() and folder.is_relative_to(here):
            raise KilnError(f"{root / name} links into the run directory or to a folder holding it; point it elsewhere")
        if any(folder.is_relative_to(other) or other.is_relative_to(folder) for other in seen):
            raise KilnError(
                f"{root / name} links into another of the run's linked folders, or holds one; point it elsewhere"
            )
        if _there(root / name / INSIDE):
            raise KilnError(
                f"{root / name / INSIDE} is in the way (not on this run's list); move its files back by hand"
            )
        seen.add(folder)
        inside[name] = sorted(p.name for p in (root / name).iterdir())
    return inside


def _keep_inside(root: Path, name: str, entries: list[str]) -> None:
    """Keep the entries of the linked or mounted folder `name` aside inside it (renames on its own disk)."""
    folder = root / name
    try:
        (folder / INSIDE).mkdir()
    except OSError as e:
        raise KilnError(
            f"cannot keep the earlier run's {name}/ aside inside {folder.resolve()} ({e.strerror})"
        ) from None
    for entry in entries:
        os.replace(folder / entry, folder / INSIDE / entry)  # a link itself, never what it points to
    sync(folder / INSIDE)
    sync(folder)


def _put_back_inside(root: Path, name: str, entries: list[str]) -> None:
    """Put back a linked or mounted folder's entries. Until the fresh start is accepted the folder is
    the run's, as an unlinked one is: a name the earlier run did not have there is the new run's and
    goes; each listed entry still aside comes back (one not yet moved when a crash came stays)."""
    folder, aside = root / name, root / name / INSIDE
    if not aside.is_dir() or aside.is_symlink():
        return
    for written in folder.iterdir():
        if written.name != INSIDE and written.name not in entries:
            remove_path(written)
    for entry in entries:
        if _there(aside / entry):
            remove_path(folder / entry)
            os.replace(aside / entry, folder / entry)
    sync(folder)
    aside.rmdir()
    sync(folder)


def _copy(path: Path, to: Path) -> None:
    """A synced copy of the file `path` at `to`, whole or not at all (a copy cut short never goes back)."""
    staged = to.with_name(f"{STAGED}{to.name}")
    shutil.copyfile(path, staged)
    rename_synced(staged, to)


class Lock(NamedTuple):
    fd: int
    held: bool
    """False on a file system without locks (some FUSE mounts): nothing tells a running command's
    files from a crash's there."""


def _lock(root: Path) -> Lock | None:
    """The run directory's lock, taken without waiting; None if another process holds it."""
    try:
        fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as e:  # a read-only run directory, say
        raise KilnError(f"cannot write in the run directory {root} ({e.strerror}); pass one kiln may use") from None
    if sys.platform == "win32":
        import msvcrt

        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:  # the byte is locked by another process
            os.close(fd)
            return None
        return Lock(fd, True)
    import fcntl

    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:  # held by another process
        os.close(fd)
        return None
    except OSError as e:
        if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL):
            os.close(fd)
            raise
        return Lock(fd, False)
    return Lock(fd, True)


def _unlock(lock: Lock) -> None:
    if sys.platform == "win32" and lock.held:  # Windows frees a lock closed without this only eventually
        import msvcrt

        os.lseek(lock.fd, 0, os.SEEK_SET)
        msvcrt.locking(lock.fd, msvcrt.LK_UNLCK, 1)
    os.close(lock.fd)  # releases flock's lock


def _leader() -> bool:
    """Whether this process acts for the launch (rank 0, or no torchrun)."""
    from kiln.train.parallel import launch_rank

    return launch_rank() == 0


def _read_list(aside: Path) -> dict[str, Any] | None:
    """The aside folder's list, checked; None when none was committed (nothing was moved yet)."""
    if not (aside / LISTED).exists():
        (aside / f"{STAGED}{LISTED}").unlink(missing_ok=True)  # killed while writing it
        if any(aside.iterdir()):
            raise KilnError(f"{aside} holds files but no {LISTED}; move them back into {aside.parent} by hand")
        return None
    try:
        listed = json.loads((aside / LISTED).read_text())
        kept, absent = list(listed["kept"]), list(listed["absent"])
        inside = {str(name): [str(entry) for entry in entries] for name, entries in listed.get("inside", {}).items()}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
        raise KilnError(f"{aside / LISTED} is unreadable ({e}); move {aside}'s files back by hand") from None
    plain = all(
        entry not in ("", ".", "..", INSIDE) and "/" not in entry for entries in inside.values() for entry in entries
    )
    if not all(name in KEPT_BY_RUN for name in [*kept, *absent, *inside]) or not plain:
        raise KilnError(f"{aside / LISTED} names files kiln never keeps aside; move {aside}'s files back by hand")
    return {"kept": kept, "absent": absent, "inside": inside}


def _drop(root: Path) -> None:
    """Finish an accepted fresh start a kill interrupted: the earlier checkpoints its list names (by
    identity, never a later one of the same name), then the earlier files."""
    from kiln.train.checkpoint import remove_checkpoints

    dropped = root / DROPPED
    if not dropped.is_dir() or dropped.is_symlink():
        return
    try:
        listed = json.loads((dropped / LISTED).read_text())
        earlier = {(str(n), int(d), int(i), int(c)) for n, d, i, c in listed["checkpoints"]}
        inside = [name for name in listed.get("inside", {}) if name in KEPT_BY_RUN]
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        earlier, inside = set(), []  # unreadable: the checkpoints stay (the next --overwrite deletes them)
    remove_checkpoints(RunDir(root).checkpoints, only=earlier)
    for name in inside:  # a linked or mounted folder's earlier entries
        aside = root / name / INSIDE
        if aside.is_dir() and not aside.is_symlink():
            shutil.rmtree(aside)
    shutil.rmtree(dropped)


def _put_back(root: Path) -> list[str]:
    """With the lock held: put back what an unaccepted fresh start kept aside (the files written at
    those names since go) and finish deleting an accepted one's; the names put back. Each step can be
    repeated: a crash here is finished by the next call."""
    _drop(root)
    aside = root / ASIDE
    if not aside.is_dir() or aside.is_symlink():
        return []
    listed = _read_list(aside)
    if listed is not None:
        for name in [*listed["kept"], *listed["absent"]]:
            kept = aside / name
            if name in listed["absent"] or _there(kept):
                remove_path(root / name)  # what the refused start wrote there
            if _there(kept):
                os.replace(kept, root / name)
        for name, entries in listed["inside"].items():
            _put_back_inside(root, name, entries)
        sync(root)
        for leftover in aside.glob(f"{STAGED}*"):  # a copy cut short
            leftover.unlink()
        (aside / LISTED).unlink()
    aside.rmdir()
    sync(root)
    return [*listed["kept"], *(f"{name}/" for name in listed["inside"])] if listed else []


def _say_put_back(root: Path, names: list[str]) -> None:
    if names:
        moved = ", ".join(names)
        print(f"{root}: put back the earlier run's {moved} (the new run did not start training)", file=sys.stderr)


def restore(run: RunDir) -> bool:
    """Put back what a fresh start that did not finish (a crash) kept aside; whether anything was put
    back. A fresh start still running (it holds the lock) is left alone, and so are other ranks'
    calls under torchrun."""
    root = run.root
    if not (root / ASIDE).exists() and not (root / DROPPED).exists() or not _leader():
        return False
    lock = _lock(root)
    if lock is None:
        return False
    try:
        if not lock.held:
            print(
                f"{root}: {ASIDE}/ holds an earlier run kept aside by a fresh start, and this file system has no "
                "locks to tell whether that start still runs; a new fresh start (or --overwrite) puts it back",
                file=sys.stderr,
            )
            return False
        names = _put_back(root)
    finally:
        _unlock(lock)
    _say_put_back(root, names)
    return bool(names)


class FreshStart:
    """The earlier run a fresh start replaces: entered before the first file is written over, `accept`ed
    by the trainer once every check has passed, and put back on leaving unaccepted."""

    def __init__(self, run: RunDir, keep: tuple[str, ...] = KEPT_BY_RUN) -> None:
        self.run = run
        self.keep = keep
        self.lock: Lock | None = None
        self.kept: list[str] = []  # the names this fresh start kept aside
        self.inside: dict[str, list[str]] = {}  # the linked or mounted folders' entries kept aside in them
        self.accepted = False

    def __enter__(self) -> FreshStart:
        if not _leader():
            return self
        root = self.run.root
        root.mkdir(parents=True, exist_ok=True)
        self.lock = _lock(root)
        if self.lock is None:
            raise KilnError(f"another kiln command is starting a run in {root}; wait until it trains, or use another")
        try:
            from kiln.train.checkpoint import checkpoint_identities

            _put_back(root)  # a crash's leftovers first
            here = [name for name in self.keep if _there(root / name) and _movable(root, name)]
            linked = [name for name in self.keep if _there(root / name) and not _movable(root, name)]
            inside = _inside_folders(root, linked)
            aside = root / ASIDE
            aside.mkdir()
            absent = [name for name in self.keep if not _there(root / name)]
            earlier = sorted(checkpoint_identities(self.run.checkpoints))  # what acceptance deletes
            listed = {"kept": here, "absent": absent, "inside": inside, "checkpoints": earlier}
            write_whole(aside / LISTED, json.dumps(listed) + "\n")
            self.kept, self.inside = here, inside
            for name, entries in inside.items():
                _keep_inside(root, name, entries)
            for name in here:
                if name in COPIED and (root / name).is_file() and not (root / name).is_symlink():
                    _copy(root / name, aside / name)
                else:
                    os.replace(root / name, aside / name)  # a link itself, never what it points to
            sync(aside)
            sync(root)
        except BaseException:
            self._leave()
            raise
        return self

    def accept(self) -> None:
        """Training accepted the fresh start (rank 0): what the new run did not write comes back, then
        one rename commits it (ASIDE -> DROPPED), then the earlier files and checkpoints go; a kill
        after the rename is finished by the next kiln command (`_drop`)."""
        from kiln.train.checkpoint import remove_checkpoints

        self.accepted = True
        root = self.run.root
        aside = root / ASIDE
        for name in self.kept:
            if not _there(root / name):  # this run writes none (curate.enabled false): the earlier one stays
                os.replace(aside / name, root / name)
        for name, entries in self.inside.items():
            for entry in entries:
                if not _there(root / name / entry):
                    os.replace(root / name / INSIDE / entry, root / name / entry)
        os.replace(aside, root / DROPPED)
        sync(root)
        remove_checkpoints(self.run.checkpoints)  # every earlier one (none is newer: training has not begun)
        _drop(root)
        self._leave()

    def _leave(self) -> None:
        """Put back what is still aside (unless accepted; quietly: the refusal is the one line to say) and
        release the lock."""
        if self.lock is None:
            return
        try:
            if not self.accepted:
                _put_back(self.run.root)
        finally:
            _unlock(self.lock)
            self.lock = None

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._leave()
