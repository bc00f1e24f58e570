"""A fresh start (--overwrite) loses nothing until training accepts it: a refusal, an error or a crash
before that puts the earlier run back; acceptance drops it with the checkpoints."""

import json
import os
import subprocess
import sys
import time

import pytest

from kiln.cli import main
from kiln.config import save_config
from kiln.errors import KilnError
from kiln.freshstart import ASIDE, DROPPED, LISTED, FreshStart, restore
from kiln.presets import get_preset
from kiln.rundir import RunDir


def _files(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def earlier(tmp_path) -> RunDir:
    """An earlier run: its config (seed 1234), tokenizer, shards and a checkpoint; no curated/."""
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    cfg = get_preset("debug")
    cfg.train.seed = 1234
    save_config(cfg, run.config)
    run.tokenizer.write_text('{"old": "tokenizer"}')
    run.split("train").mkdir(parents=True)
    (run.split("train") / "part_0.bin").write_bytes(b"old shard")
    (run.checkpoints / "step_30").mkdir(parents=True)
    (run.checkpoints / "step_30" / "model.safetensors").write_bytes(b"old weights")
    return run


def _write_new(run: RunDir) -> None:
    """What a fresh start's data stages write: a tokenizer, shards, and a curated/ the earlier run had not."""
    run.tokenizer.write_text('{"new": "tokenizer"}')
    run.split("val").mkdir(parents=True)
    (run.split("val") / "part_0.bin").write_bytes(b"new shard")
    run.curated.mkdir()
    (run.curated / "documents_00000.jsonl").write_text("{}\n")


def test_a_refusal_before_training_accepts_puts_every_file_back(earlier):
    before = _files(earlier.root)
    with pytest.raises(KilnError, match="budget"), FreshStart(earlier) as fresh:
        assert not earlier.tokenizer.exists() and not earlier.config.exists()  # kept aside, not copied
        _write_new(earlier)
        raise KilnError("the data stages took the budget")
    assert not fresh.accepted
    assert _files(earlier.root) == before  # the new curated/ went, the earlier files came back
    assert sorted(p.name for p in earlier.root.iterdir()) == ["checkpoints", "config.json", "shards", "tokenizer.json"]


def test_acceptance_drops_the_earlier_run_and_its_checkpoints(earlier):
    with FreshStart(earlier) as fresh:
        _write_new(earlier)
        fresh.accept()
    assert earlier.tokenizer.read_text() == '{"new": "tokenizer"}' and not earlier.config.exists()
    assert not (earlier.split("train")).exists() and (earlier.split("val") / "part_0.bin").exists()
    assert list(earlier.checkpoints.iterdir()) == []
    assert not (earlier.root / ASIDE).exists() and not (earlier.root / DROPPED).exists()


def test_after_a_crash_the_next_command_puts_the_earlier_run_back(earlier, capsys):
    before = _files(earlier.root)
    FreshStart(earlier).__enter__()  # killed before training accepted: never left
    _write_new(earlier)
    listed = json.loads((earlier.root / ASIDE / LISTED).read_text())
    assert main(["train", "--run-dir", str(earlier.root), "--dry-run"]) == 0  # the process is alive: left alone
    assert "train.seed = 1234" not in capsys.readouterr().out and (earlier.root / ASIDE).is_dir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    listed["pid"] = dead.pid
    (earlier.root / ASIDE / LISTED).write_text(json.dumps(listed))
    assert main(["train", "--run-dir", str(earlier.root), "--dry-run"]) == 0  # the earlier config is read
    out = capsys.readouterr()
    assert "train.seed = 1234" in out.out and "put back the earlier run's config.json" in out.err
    assert _files(earlier.root) == before
    assert not restore(earlier)  # nothing more to do


def test_a_fresh_start_running_beside_is_not_disturbed(earlier):
    with FreshStart(earlier):
        _write_new(earlier)
        assert not restore(earlier)  # another command's (same process, alive): left alone
        with pytest.raises(KilnError, match="another kiln command"), FreshStart(earlier):
            pass
        with FreshStart(earlier, keep=()) as other:  # kiln train --overwrite keeps nothing aside ...
            other.accept()
        assert (earlier.root / ASIDE).is_dir()  # ... and drops nothing of another's
        assert earlier.tokenizer.read_text() == '{"new": "tokenizer"}'


def test_a_planted_list_moves_nothing(earlier):
    (earlier.root / ASIDE).mkdir()
    (earlier.root / ASIDE / LISTED).write_text(json.dumps({"kept": ["../../elsewhere"], "absent": [], "pid": 1}))
    before = _files(earlier.root)
    with pytest.raises(KilnError, match="never keeps aside"):
        restore(earlier)
    assert _files(earlier.root) == before
    (earlier.root / ASIDE / LISTED).write_text("{half")
    with pytest.raises(KilnError, match="unreadable"):
        restore(earlier)
    os.remove(earlier.root / ASIDE / LISTED)
    assert not restore(earlier) and not (earlier.root / ASIDE).exists()  # killed before it listed anything


def test_a_supervised_fresh_start_killed_before_training_restarts_afresh(earlier, monkeypatch):
    """kiln train --overwrite --max-restarts: a child killed before it accepted the fresh start (the
    earlier checkpoints are there) runs again with --overwrite, not resumed from the earlier run."""
    from kiln.train import supervise

    commands: list[list[str]] = []

    def call(command: list[str]) -> int:
        commands.append(command)
        if len(commands) == 2:  # this one accepts (the earlier checkpoint goes), writes its own, then dies
            FreshStart(earlier, keep=()).accept()
            time.sleep(0.05)  # a step later, as training's first checkpoint is (file times tick in jiffies)
            (earlier.checkpoints / "step_30").mkdir()  # the same name (maybe the same inode), another folder
        return 0 if len(commands) == 3 else 1

    monkeypatch.setattr(supervise.subprocess, "call", call)
    argv = ["train", "--run-dir", str(earlier.root), "--overwrite", "--max-restarts", "3"]
    assert supervise.supervise(argv, 3, earlier.checkpoints) == 0
    assert [("--overwrite" in c, "--resume" in c) for c in commands] == [(True, False), (True, False), (False, True)]
