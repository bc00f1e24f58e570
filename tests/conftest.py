"""Shared fixtures: a tiny corpus, tokenizer and tokenized run directory, all made in-process."""

from __future__ import annotations

import os
import random
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kiln import stages
from kiln.config import apply_overrides
from kiln.presets import debug
from kiln.runconfig import RunConfig
from kiln.rundir import RunDir

WORDS = (
    "the union is strong and the people are free while congress shall act on the budget of the nation "
    "we must build roads schools and ports for our children peace trade law war gold silver"
).split()


def make_text(rng: random.Random, num_sentences: int) -> str:
    sentences = []
    for _ in range(num_sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(5, 14))]
        sentences.append(" ".join(words).capitalize() + rng.choice([".", ".", "!", "?"]))
    return " ".join(sentences)


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory) -> Path:
    """A folder of 40 small synthetic .txt documents (plus a .md), deterministic."""
    root = tmp_path_factory.mktemp("corpus")
    rng = random.Random(0)
    for i in range(40):
        (root / f"doc_{i:03d}.txt").write_text(make_text(rng, 30))
    (root / "notes.md").write_text("# Notes\n\n" + make_text(rng, 10))
    return root


def tiny_config(corpus: Path, **overrides: str) -> RunConfig:
    """The debug preset pointed at `corpus`, with overrides."""
    base = {
        "data.corpus": str(corpus),
        "data.max_documents": "0",
        "data.val_fraction": "0.2",
        "tokenizer.vocab_size": "320",
        "tokenizer.num_sentinels": "4",
        "model.vocab_size": "320",
        "train.device": "cpu",
        "train.precision": "fp32",  # the same path on every CPU ("auto" picks bf16 where it measures faster)
    }
    return apply_overrides(debug(), {**base, **overrides})


STARTED: list[subprocess.Popen] = []
"""The processes `start` launched in the running test (`reap_started` kills what is left of them)."""


def start(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    """subprocess.Popen, killed with every process under it when the test ends however it ends (a failed
    assert, pytest-timeout): torchrun's workers and a supervisor's child too, which would otherwise go on
    taking the cores from the rest of the suite."""
    proc = subprocess.Popen(cmd, **kwargs)
    STARTED.append(proc)
    return proc


def run_to_end(cmd: list[str], timeout: float, **kwargs: Any) -> subprocess.CompletedProcess:
    """subprocess.run through `start`: at the timeout every process under `cmd` is killed with it."""
    if kwargs.pop("capture_output", False):
        kwargs.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc = start(cmd, **kwargs)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        _kill_tree(proc)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _descendants(pid: int) -> list[int]:
    """Every living process under `pid` (Linux /proc; torchrun starts its workers in sessions of their
    own, so a process group does not reach them)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def _kill_tree(proc: subprocess.Popen) -> None:
    """Kill `proc` and everything under it, then reap it. Only while it is unreaped (a zombie holds its
    pid): a reaped process's pid may already be another's."""
    if proc.returncode is None:
        for pid in [proc.pid, *_descendants(proc.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.communicate()  # reaps it and closes its pipes
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@pytest.fixture(autouse=True)
def reap_started() -> Iterator[None]:
    yield
    while STARTED:
        _kill_tree(STARTED.pop())


@pytest.fixture(scope="session")
def tokenized_run(tmp_path_factory, corpus_dir) -> tuple[RunConfig, RunDir]:
    """A run directory with tokenizer.json and train/val shards of the tiny corpus (do not train in it)."""
    cfg = tiny_config(corpus_dir)
    run = RunDir(tmp_path_factory.mktemp("run"))
    stages.tokenizer(cfg, run)
    stages.tokenize(cfg, run)
    return cfg, run


def copy_run(src: RunDir, dst: Path) -> RunDir:
    """Copy a tokenized run directory so a test can train in it."""
    import shutil

    shutil.copytree(src.root, dst, dirs_exist_ok=True)
    return RunDir(dst)


class RenameLog:
    """Every os.replace and os.fsync while installed, by inode (a file keeps it when renamed). `check`
    asserts that each rename published only what was on disk before it (its file, or every file and
    folder under its folder, synced) and that its destination's folder was synced after it: what a
    power loss, not only a killed process, needs to leave the old output or the new one."""

    def __init__(self) -> None:
        self.events: list[tuple] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> RenameLog:
        import os

        real_fsync, real_replace = os.fsync, os.replace

        def fsync(fd):
            self.events.append(("sync", os.fstat(fd).st_ino))
            real_fsync(fd)

        def replace(src, dst):
            src, dst = Path(src), Path(dst)
            moved = [src, *src.rglob("*")] if src.is_dir() else [src]
            inodes = [p.stat().st_ino for p in moved]
            real_replace(src, dst)
            self.events.append(("replace", inodes, dst.parent.stat().st_ino, f"{src} -> {dst}"))

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "replace", replace)
        return self

    def synced_before_rename_to(self, name: str, files: list[Path]) -> None:
        """Assert that every one of `files` (by inode) was synced before the first rename to `name`."""
        first = next(i for i, event in enumerate(self.events) if event[0] == "replace" and event[3].endswith(name))
        synced = {event[1] for event in self.events[:first] if event[0] == "sync"}
        assert {f.stat().st_ino for f in files} <= synced, f"not all synced before the rename to {name}"

    def check(self) -> None:
        renames = [i for i, event in enumerate(self.events) if event[0] == "replace"]
        assert renames, "nothing was published by a rename"
        for i in renames:
            _, inodes, parent, what = self.events[i]
            synced_before = {event[1] for event in self.events[:i] if event[0] == "sync"}
            assert set(inodes) <= synced_before, f"{what}: renamed before what it publishes was synced"
            assert ("sync", parent) in self.events[i + 1 :], f"{what}: its folder was not synced after it"


@pytest.fixture
def rename_log(monkeypatch) -> RenameLog:
    """A RenameLog installed for the test."""
    return RenameLog().install(monkeypatch)
