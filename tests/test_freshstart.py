"""A fresh start (--overwrite) loses nothing until training accepts it: a refusal, an error or a crash
before that puts the earlier run back; acceptance drops it with the checkpoints."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiln.cli import main
from kiln.config import save_config
from kiln.errors import KilnError
from kiln.freshstart import ASIDE, DROPPED, KEPT_BY_RUN, LISTED, LOCK, FreshStart, restore
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
        assert not earlier.split("train").exists() and not earlier.tokenizer.exists()  # moved aside, not copied
        _write_new(earlier)
        raise KilnError("the data stages took the budget")
    assert not fresh.accepted
    assert _files(earlier.root) == {**before, LOCK: b""}  # the new curated/ went, the earlier files came back
    assert sorted(p.name for p in earlier.root.iterdir()) == [
        LOCK,
        "checkpoints",
        "config.json",
        "shards",
        "tokenizer.json",
    ]


def test_acceptance_drops_the_earlier_run_and_its_checkpoints(earlier):
    with FreshStart(earlier) as fresh:
        _write_new(earlier)
        fresh.accept()
    assert earlier.tokenizer.read_text() == '{"new": "tokenizer"}'  # replaced
    assert not (earlier.split("train")).exists() and (earlier.split("val") / "part_0.bin").exists()
    assert "1234" in earlier.config.read_text()  # not written by the new run (here): the earlier one stays
    assert list(earlier.checkpoints.iterdir()) == []
    assert not (earlier.root / ASIDE).exists() and not (earlier.root / DROPPED).exists()


CRASH = """
import os, signal, sys
from pathlib import Path
from kiln.config import save_config
from kiln.freshstart import FreshStart
from kiln.presets import get_preset
from kiln.rundir import RunDir

run = RunDir(sys.argv[1])
FreshStart(run).__enter__()
run.tokenizer.write_text('{"new": "tokenizer"}')
cfg = get_preset("debug")
cfg.train.seed = 99
save_config(cfg, run.config)
os.kill(os.getpid(), signal.SIGKILL)  # before training accepts: the lock goes with the process
"""


def test_after_a_crash_the_next_command_puts_the_earlier_run_back(earlier, capsys):
    before = _files(earlier.root)
    proc = subprocess.run([sys.executable, "-c", CRASH, str(earlier.root)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (earlier.root / ASIDE).is_dir() and "1234" not in earlier.config.read_text()
    assert main(["train", "--run-dir", str(earlier.root), "--dry-run"]) == 0  # the earlier config is read
    out = capsys.readouterr()
    assert "train.seed = 1234" in out.out and "put back the earlier run's config.json" in out.err
    assert {k: v for k, v in _files(earlier.root).items() if k != LOCK} == before
    assert not restore(earlier)  # nothing more to do


def test_a_fresh_start_under_way_is_never_undone_nor_doubled(earlier, capsys):
    with FreshStart(earlier):
        _write_new(earlier)
        assert not restore(earlier)  # another command's restore: the lock is held, nothing moves
        assert main(["train", "--run-dir", str(earlier.root), "--dry-run"]) == 0
        for keep in (KEPT_BY_RUN, ()):  # kiln run --overwrite, kiln train --overwrite beside it: refused
            with pytest.raises(KilnError, match="another kiln command"), FreshStart(earlier, keep=keep):
                pass
        assert earlier.tokenizer.read_text() == '{"new": "tokenizer"}' and (earlier.root / ASIDE).is_dir()
        assert (earlier.checkpoints / "step_30" / "model.safetensors").exists()
    assert earlier.tokenizer.read_text() == '{"old": "tokenizer"}'  # put back on leaving unaccepted


def test_acceptance_keeps_what_the_new_run_did_not_write(earlier):
    earlier.curated.mkdir()
    (earlier.curated / "documents_00000.jsonl").write_text("earlier\n")
    with FreshStart(earlier) as fresh:  # a run that curates nothing (curate.enabled false)
        earlier.tokenizer.write_text('{"new": "tokenizer"}')
        fresh.accept()
    assert (earlier.curated / "documents_00000.jsonl").read_text() == "earlier\n"
    assert earlier.tokenizer.read_text() == '{"new": "tokenizer"}'
    assert not (earlier.root / ASIDE).exists() and list(earlier.checkpoints.iterdir()) == []


def test_a_failure_while_moving_aside_puts_back_and_lets_go(earlier, monkeypatch):
    import kiln.freshstart as freshstart

    before = _files(earlier.root)
    replace = os.replace

    def across_devices(src, dst):
        if Path(src).name == "shards":
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        replace(src, dst)

    monkeypatch.setattr(freshstart.os, "replace", across_devices)
    with pytest.raises(OSError, match="cross-device"), FreshStart(earlier):
        pass
    monkeypatch.undo()
    assert {k: v for k, v in _files(earlier.root).items() if k != LOCK} == before
    with FreshStart(earlier) as fresh:  # the lock was let go
        fresh.accept()


def test_a_planted_list_moves_nothing(earlier):
    (earlier.root / ASIDE).mkdir()
    (earlier.root / ASIDE / LISTED).write_text(json.dumps({"kept": ["../../elsewhere"], "absent": []}))
    before = _files(earlier.root)
    with pytest.raises(KilnError, match="never keeps aside"):
        restore(earlier)
    assert {k: v for k, v in _files(earlier.root).items() if k != LOCK} == before
    (earlier.root / ASIDE / LISTED).write_text("{half")
    with pytest.raises(KilnError, match="unreadable"):
        restore(earlier)
    os.remove(earlier.root / ASIDE / LISTED)
    (earlier.root / ASIDE / ".staged-kept.json").write_text('{"ke')  # killed while writing the list
    assert not restore(earlier) and not (earlier.root / ASIDE).exists()


def test_a_supervised_fresh_start_killed_before_training_restarts_afresh(earlier, monkeypatch):
    """kiln train --overwrite --max-restarts: a child killed before it accepted the fresh start (the
    earlier checkpoints are there) runs again with --overwrite, not resumed from the earlier run."""
    from kiln.train import supervise

    commands: list[list[str]] = []

    def call(command: list[str]) -> int:
        commands.append(command)
        if len(commands) == 2:  # this one accepts (the earlier checkpoint goes), writes its own, then dies
            with FreshStart(earlier, keep=()) as fresh:
                fresh.accept()
            time.sleep(0.05)  # a step later, as training's first checkpoint is (file times tick in jiffies)
            (earlier.checkpoints / "step_30").mkdir()  # the same name (maybe the same inode), another folder
        return 0 if len(commands) == 3 else 1

    (earlier.checkpoints / "step_30.bak").mkdir()  # a user's folder, never deleted: it says nothing
    monkeypatch.setattr(supervise, "run_child", call)
    argv = ["train", "--run-dir", str(earlier.root), "--overwrite", "--max-restarts", "3"]
    assert supervise.supervise(argv, 3, earlier.checkpoints) == 0
    assert [("--overwrite" in c, "--resume" in c) for c in commands] == [(True, False), (True, False), (False, True)]


def _link_shards(earlier: RunDir, tmp_path) -> Path:
    """The earlier run's shards/ on another disk (a link), with a file of the user's beside its splits."""
    elsewhere = tmp_path / "big_disk"
    earlier.shards.rename(elsewhere)
    earlier.shards.symlink_to(elsewhere)
    (elsewhere / "notes.txt").write_text("the user's")
    return elsewhere


def test_the_plan_stays_for_the_planner_and_a_linked_folder_is_kept_aside_inside_it(earlier, tmp_path):
    earlier.plan.write_text('{"depth": 3}')  # the planner reuses a plan made for the same config and machine
    elsewhere = _link_shards(earlier, tmp_path)
    before = _files(elsewhere)
    with pytest.raises(KilnError), FreshStart(earlier):
        assert earlier.plan.read_text() == '{"depth": 3}' and earlier.shards.is_symlink()
        listed = json.loads((earlier.root / ASIDE / LISTED).read_text())
        assert listed["kept"] == ["config.json", "plan.json", "tokenizer.json"]
        assert listed["inside"] == {"shards": ["notes.txt", "train"]}
        assert [p.name for p in elsewhere.iterdir()] == [ASIDE]  # renamed on its own disk
        earlier.plan.write_text('{"depth": 4}')
        _write_new(earlier)  # the stages write into the linked folder
        (earlier.split("train")).mkdir()
        (earlier.split("train") / "part_0.bin").write_bytes(b"new shard")
        raise KilnError("refused")
    assert earlier.plan.read_text() == '{"depth": 3}' and earlier.shards.resolve() == elsewhere.resolve()
    assert _files(elsewhere) == before and sorted(p.name for p in elsewhere.iterdir()) == ["notes.txt", "train"]


def test_acceptance_drops_a_linked_folders_earlier_entries_the_new_run_replaced(earlier, tmp_path):
    elsewhere = _link_shards(earlier, tmp_path)
    with FreshStart(earlier) as fresh:
        earlier.split("train").mkdir()
        (earlier.split("train") / "part_0.bin").write_bytes(b"new shard")
        fresh.accept()
    assert _files(elsewhere) == {"notes.txt": b"the user's", "train/part_0.bin": b"new shard"}
    assert earlier.shards.is_symlink() and list(earlier.checkpoints.iterdir()) == []


LINKED_CRASH = """
import os, signal, sys
from kiln.freshstart import FreshStart
from kiln.rundir import RunDir

run = RunDir(sys.argv[1])
FreshStart(run).__enter__()
(run.split("val")).mkdir()
(run.split("val") / "part_0.bin").write_bytes(b"new shard")
os.kill(os.getpid(), signal.SIGKILL)  # before training accepts
"""


def test_a_crash_or_a_failure_keeping_a_linked_folder_aside_loses_none_of_it(earlier, tmp_path, monkeypatch):
    import kiln.freshstart as freshstart

    elsewhere = _link_shards(earlier, tmp_path)
    before = _files(elsewhere)
    proc = subprocess.run(
        [sys.executable, "-c", LINKED_CRASH, str(earlier.root)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (elsewhere / ASIDE / "train").is_dir() and (elsewhere / "val").is_dir()
    assert restore(earlier)  # the next command puts the folder's entries back and removes the new ones
    assert _files(elsewhere) == before and not (elsewhere / "val").exists()
    real_replace, moved = os.replace, []

    def killed_after_one(src, dst):
        if Path(dst).parent == earlier.shards / ASIDE and moved:
            raise KeyboardInterrupt  # part-way through keeping the folder's entries aside
        moved.append(src)
        real_replace(src, dst)

    monkeypatch.setattr(freshstart.os, "replace", killed_after_one)
    with pytest.raises(KeyboardInterrupt), FreshStart(earlier):
        pass
    assert _files(elsewhere) == before and not (elsewhere / ASIDE).exists()
    monkeypatch.setattr(freshstart.os, "replace", real_replace)
    with FreshStart(earlier) as fresh:  # killed inside acceptance, before the rename that commits it
        (elsewhere / "val").mkdir()
        (elsewhere / "val" / "part_0.bin").write_bytes(b"new shard")  # train/ and notes.txt: not written
        put_back = []

        def killed_after_putting_one_back(src, dst):
            if Path(src).parent == earlier.shards / ASIDE:
                if put_back:
                    raise KeyboardInterrupt  # notes.txt is back, train/ is not
                put_back.append(src)
            real_replace(src, dst)

        monkeypatch.setattr(freshstart.os, "replace", killed_after_putting_one_back)
        with pytest.raises(KeyboardInterrupt):
            fresh.accept()
        monkeypatch.setattr(freshstart.os, "replace", real_replace)
        fresh.accepted = False  # as after a kill: the lock goes with the process, the next command restores
    assert _files(elsewhere) == before and not (elsewhere / "val").exists()


def test_a_linked_folder_that_holds_the_run_or_an_unlisted_aside_is_refused_untouched(earlier, tmp_path):
    elsewhere = _link_shards(earlier, tmp_path)
    (elsewhere / ASIDE).mkdir()  # not on any list: whose it is, kiln cannot tell
    (elsewhere / ASIDE / "part_9.bin").write_bytes(b"someone's")
    before = {**_files(earlier.root), LOCK: b""}
    with pytest.raises(KilnError, match="in the way"), FreshStart(earlier):
        pass
    assert _files(earlier.root) == before
    (elsewhere / ASIDE / "part_9.bin").unlink()
    (elsewhere / ASIDE).rmdir()
    earlier.curated.symlink_to(earlier.root)  # a link to the run directory itself
    with pytest.raises(KilnError, match="or to a folder holding it"), FreshStart(earlier):
        pass
    earlier.curated.unlink()
    (elsewhere / "text").mkdir()
    earlier.curated.symlink_to(elsewhere / "text")  # inside the linked shards/: kept aside twice over
    with pytest.raises(KilnError, match="another of the run's linked folders"), FreshStart(earlier):
        pass
    earlier.curated.unlink()
    (elsewhere / "text").rmdir()
    earlier.curated.mkdir()
    earlier.root.joinpath("curated_images").symlink_to(earlier.curated)  # moved aside with curated/ itself
    with pytest.raises(KilnError, match="links into the run directory"), FreshStart(earlier):
        pass
    (earlier.root / "curated_images").unlink()
    earlier.curated.rmdir()
    assert _files(earlier.root) == before and not (earlier.root / ASIDE).exists()
    assert sorted(p.name for p in elsewhere.iterdir()) == ["notes.txt", "train"]


def test_without_locks_only_a_fresh_start_puts_a_crash_back(earlier, monkeypatch, capsys):
    import fcntl

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    FreshStart(earlier).__enter__()  # a start that crashed, or one still running: nothing tells here
    earlier.tokenizer.write_text('{"new": "tokenizer"}')
    assert not restore(earlier) and "no locks" in capsys.readouterr().err
    assert earlier.tokenizer.read_text() == '{"new": "tokenizer"}'
    with FreshStart(earlier):  # the user starts afresh again: the leftovers come back first
        assert (earlier.root / ASIDE / "tokenizer.json").read_text() == '{"old": "tokenizer"}'
    assert earlier.tokenizer.read_text() == '{"old": "tokenizer"}'


def test_a_linked_file_is_kept_aside_as_a_link_and_never_written_through(earlier, tmp_path):
    from kiln.finetune.verb import prepare_run

    shared = tmp_path / "shared_tokenizer.json"
    shared.write_text('{"shared": "tokenizer"}')
    earlier.tokenizer.unlink()
    earlier.tokenizer.symlink_to(shared)
    start = tmp_path / "step_5"
    start.mkdir()
    (start / "tokenizer.json").write_text('{"checkpoint": "tokenizer"}')
    with pytest.raises(KilnError), FreshStart(earlier, keep=("config.json", "tokenizer.json", "plan.json")):
        prepare_run(get_preset("debug"), start, earlier)  # kiln finetune's first writes
        assert earlier.tokenizer.read_text() == '{"checkpoint": "tokenizer"}' and not earlier.tokenizer.is_symlink()
        raise KilnError("the method refuses the data")
    assert earlier.tokenizer.is_symlink() and shared.read_text() == '{"shared": "tokenizer"}'


def test_a_copy_cut_short_never_replaces_the_file(earlier, monkeypatch):
    import shutil

    import kiln.freshstart as freshstart

    earlier.plan.write_text('{"depth": 3}' + " " * 10_000)

    def disk_full(src, dst):
        Path(dst).write_text('{"dep')
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(freshstart.shutil, "copyfile", disk_full)
    with pytest.raises(OSError, match="No space"), FreshStart(earlier):
        pass
    monkeypatch.setattr(freshstart.shutil, "copyfile", shutil.copyfile)
    assert earlier.plan.read_text().startswith('{"depth": 3}') and not (earlier.root / ASIDE).exists()
    assert earlier.tokenizer.read_text() == '{"old": "tokenizer"}'


def test_a_kill_inside_acceptance_is_finished_by_the_next_command(earlier, monkeypatch):
    import kiln.train.checkpoint as checkpoint

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with FreshStart(earlier) as fresh:
        _write_new(earlier)
        monkeypatch.setattr(checkpoint, "remove_checkpoints", killed)
        with pytest.raises(KeyboardInterrupt):  # stopped just after the rename that commits it
            fresh.accept()
    monkeypatch.undo()
    assert (earlier.root / DROPPED).is_dir() and (earlier.checkpoints / "step_30").is_dir()
    (earlier.checkpoints / "step_30.bak").mkdir()  # a user's folder: never the list's
    assert not restore(earlier)  # nothing put back: it was accepted; the earlier checkpoints go now
    assert sorted(p.name for p in earlier.checkpoints.iterdir()) == ["step_30.bak"]
    assert not (earlier.root / DROPPED).exists() and earlier.tokenizer.read_text() == '{"new": "tokenizer"}'


def test_a_lock_kiln_cannot_open_is_one_line(earlier):
    (earlier.root / LOCK).mkdir()  # in the way (a read-only run directory fails the same way)
    with pytest.raises(KilnError, match="cannot write in the run directory"), FreshStart(earlier):
        pass
    assert earlier.tokenizer.read_text() == '{"old": "tokenizer"}'


def test_under_torchrun_only_rank_0_prepares_a_fine_tuning_run(earlier, tmp_path, monkeypatch):
    """Another rank writing the checkpoint's tokenizer while rank 0 keeps the earlier one aside would
    have it keep the new one, losing the earlier run's."""
    from kiln.finetune.verb import prepare_run

    start = tmp_path / "step_5"
    start.mkdir()
    (start / "tokenizer.json").write_text('{"checkpoint": "tokenizer"}')
    config = earlier.config.read_text()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets them
    prepare_run(get_preset("debug"), start, earlier)
    assert earlier.tokenizer.read_text() == '{"old": "tokenizer"}' and earlier.config.read_text() == config
    monkeypatch.setenv("RANK", "0")
    prepare_run(get_preset("debug"), start, earlier)
    assert earlier.tokenizer.read_text() == '{"checkpoint": "tokenizer"}' and earlier.config.read_text() != config


def test_another_rank_beginning_the_run_meanwhile_is_not_taken_for_a_stranger(tmp_path, monkeypatch):
    """Under torchrun every rank checks --run-dir while rank 0 may be creating .overwritten/ or writing
    config.json between that check's look for them and its listing of the folder."""
    fresh = RunDir(tmp_path / "fresh")
    fresh.root.mkdir()
    real_iterdir = Path.iterdir

    def rank_0_meanwhile(self):
        if self == fresh.root:
            (fresh.root / ASIDE).mkdir()  # rank 0's fresh start, between the look and the listing
        return real_iterdir(self)

    monkeypatch.setattr(Path, "iterdir", rank_0_meanwhile)
    fresh.check_ours()
    monkeypatch.setattr(Path, "iterdir", real_iterdir)
    (fresh.root / ASIDE).rmdir()
    (fresh.root / "notes.txt").write_text("mine")  # a stranger is still refused
    with pytest.raises(KilnError, match="not a kiln run directory"):
        fresh.check_ours()
