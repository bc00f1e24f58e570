"""`kiln train --max-restarts K`: training in a child process, restarted from its newest complete
checkpoint after a crash (not after Ctrl-C, SIGTERM or a user error)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kiln.train.checkpoint import Identity


def child_argv(argv: list[str]) -> list[str]:
    """`argv` without --max-restarts (and its value)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--max-restarts":
            skip = True
        elif not arg.startswith("--max-restarts="):
            out.append(arg)
    return out


def kiln_command() -> list[str]:
    """`python -m kiln` without the working folder on the child's import path (`-P`; by hand before
    Python 3.11): a torch.py or numpy.py in the folder the user trains from is never imported."""
    if sys.version_info >= (3, 11):
        return [sys.executable, "-P", "-m", "kiln"]
    run = "import sys; del sys.path[0]; import runpy; runpy.run_module('kiln', run_name='__main__', alter_sys=True)"
    return [sys.executable, "-c", run]


def run_child(command: list[str]) -> int:
    """Run `command` to its end; its exit code. A SIGINT or SIGTERM the supervisor gets is passed on to
    the child, and the supervisor waits while the child checkpoints and stops: it neither dies leaving
    the child training alone nor kills it mid-save. (A terminal's Ctrl-C reaches the child twice, by
    itself and passed on: the trainer takes two within SAME_REQUEST_S as one.)"""
    child = subprocess.Popen(command)

    def forward(signum: int, frame: object) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)} if main else {}
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _folders(checkpoints: Path | None) -> set[Identity]:
    """The checkpoint folders kiln wrote there (those a fresh start deletes), each told from a later one."""
    from kiln.train.checkpoint import checkpoint_identities

    return set() if checkpoints is None else checkpoint_identities(checkpoints)


def supervise(argv: list[str], max_restarts: int, replaced: Path | None = None) -> int:
    """Run `kiln <argv>` as a child; after a crash, restart it with --resume auto, up to
    `max_restarts` times. Returns the last exit code. With --overwrite, `replaced` is the checkpoints
    folder it starts afresh over: while one of those checkpoints is there the child had not started
    training (it deletes them first), so it is restarted afresh, not resumed from the earlier run."""
    child = child_argv(argv)
    command = [*kiln_command(), *child]
    earlier = _folders(replaced)
    code = 0
    for attempt in range(max_restarts + 1):
        code = run_child(command)
        if code in (0, 2, 130):  # done, a user error, or stopped on purpose (Ctrl-C / SIGTERM)
            return code
        if attempt < max_restarts:
            afresh = bool(earlier & _folders(replaced))  # the fresh start had not been accepted
            print(
                f"kiln train: exited with code {code}; restart {attempt + 1} of {max_restarts} "
                + ("afresh (it had not started training)" if afresh else "from the newest complete checkpoint"),
                file=sys.stderr,
            )
            if not afresh:
                command = [*kiln_command(), *[a for a in child if a != "--overwrite"], "--resume", "auto"]
    print(f"kiln train: still failing after {max_restarts} restarts (last exit code {code})", file=sys.stderr)
    return code
