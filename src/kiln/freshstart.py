"""A fresh start over an earlier run (`--overwrite`) that loses nothing until training accepts it.

`kiln run --overwrite` writes a new corpus, tokenizer, shards and config before the trainer has checked
the run (its budget, its options, train.init_from), and the earlier run's checkpoints need the earlier
files to resume. So the fresh start first moves what it will replace (`KEPT_BY_RUN`) into the run
directory's `.overwritten/` folder, with a list of what it holds; `accept` (the trainer, once every check
has passed) drops that folder and then the earlier checkpoints; a refusal or an error before that puts
every file back (`restore`), and so does the next kiln command on the run directory after a crash:
the folder is there only while the fresh start is unaccepted. `kiln train --overwrite` replaces nothing
before training and keeps nothing aside (`keep=()`); it deletes the checkpoints on acceptance too."""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from pathlib import Path
from types import TracebackType

from kiln.errors import KilnError
from kiln.rundir import OVERWRITTEN, RunDir
from kiln.staging import sync, write_whole

ASIDE = OVERWRITTEN
"""The run directory's folder of what an unaccepted fresh start replaced."""
DROPPED = f"{OVERWRITTEN}-dropped"
"""The same folder once the fresh start was accepted, while it is deleted."""
LISTED = "kept.json"
"""In ASIDE: the names moved there (`kept`), those the earlier run did not have (`absent`), and the
process keeping them (`host`, `pid`)."""
KEPT_BY_RUN = ("config.json", "stages.json", "plan.json", "tokenizer.json", "curated", "curated_images", "shards")
"""What `kiln run`'s data stages and planner write before training accepts a fresh start."""


def _remove(path: Path) -> None:
    """Delete a file, a link (never what it points to) or a folder of the run."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.is_dir():
        shutil.rmtree(path)


def _alive(listed: dict) -> bool:
    """Whether the process that kept the files aside still runs (on this machine)."""
    if listed.get("host") != socket.gethostname() or not isinstance(listed.get("pid"), int):
        return False
    try:
        os.kill(listed["pid"], 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, another user's
        return True
    return True


def restore(run: RunDir, own: bool = False) -> bool:
    """Put back what an unaccepted fresh start kept aside (the files it wrote at those names go), and
    finish deleting an accepted one's; whether anything was put back. A fresh start still running in
    another process is left alone unless `own` (this process's). Each step can be repeated: a crash
    here is finished by the next call."""
    root = run.root
    dropped = root / DROPPED
    if dropped.is_dir() and not dropped.is_symlink():
        shutil.rmtree(dropped)
    aside = root / ASIDE
    if not aside.is_dir() or aside.is_symlink():
        return False
    if not (aside / LISTED).exists() and not any(aside.iterdir()):  # killed before it listed anything
        aside.rmdir()
        return False
    try:
        listed = json.loads((aside / LISTED).read_text())
        names = [*listed["kept"], *listed["absent"]]
    except (OSError, ValueError, TypeError, KeyError) as e:
        raise KilnError(f"{aside / LISTED} is unreadable ({e}); move {aside}'s files back by hand") from None
    if not all(name in KEPT_BY_RUN for name in names):
        raise KilnError(f"{aside / LISTED} names files kiln never keeps aside; move {aside}'s files back by hand")
    if not own and _alive(listed):
        return False
    for name in names:
        kept = aside / name
        if name in listed["absent"] or kept.exists() or kept.is_symlink():
            _remove(root / name)  # what the refused start wrote there
        if kept.exists() or kept.is_symlink():
            os.replace(kept, root / name)
    sync(root)
    (aside / LISTED).unlink()
    aside.rmdir()
    sync(root)
    moved = ", ".join(listed["kept"])
    print(f"{root}: put back the earlier run's {moved} (an --overwrite that did not start training)", file=sys.stderr)
    return True


class FreshStart:
    """The earlier run a fresh start replaces: entered before the first file is written over, `accept`ed
    by the trainer once every check has passed, and put back on leaving unaccepted."""

    def __init__(self, run: RunDir, keep: tuple[str, ...] = KEPT_BY_RUN) -> None:
        self.run = run
        self.keep = keep
        self.kept = False  # whether this fresh start moved files aside
        self.accepted = False

    def __enter__(self) -> FreshStart:
        root = self.run.root
        restore(self.run)  # a crash's leftovers first (a fresh start running beside it is refused below)
        here = [name for name in self.keep if (root / name).exists() or (root / name).is_symlink()]
        if not here:
            return self
        aside = root / ASIDE
        if aside.exists():
            raise KilnError(f"{root} is being started afresh by another kiln command (it keeps {aside}); wait for it")
        aside.mkdir()
        absent = [name for name in self.keep if name not in here]
        listed = {"kept": here, "absent": absent, "host": socket.gethostname(), "pid": os.getpid()}
        write_whole(aside / LISTED, json.dumps(listed) + "\n")
        self.kept = True
        for name in here:
            os.replace(root / name, aside / name)
        sync(aside)
        sync(root)
        return self

    def accept(self) -> None:
        """Training accepted the fresh start: the earlier run's files and checkpoints go, in that order
        (a crash between leaves the checkpoints, which the next --overwrite deletes)."""
        from kiln.train.checkpoint import remove_checkpoints

        self.accepted = True
        root = self.run.root
        if self.kept:
            os.replace(root / ASIDE, root / DROPPED)
            sync(root)
            shutil.rmtree(root / DROPPED)
        remove_checkpoints(self.run.checkpoints)

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self.kept and not self.accepted:
            restore(self.run, own=True)
