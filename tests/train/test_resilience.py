"""Runs survive crashes: SIGKILL + --resume auto, the supervisor, corrupt checkpoints, non-finite steps."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kiln import stages
from kiln.errors import KilnError
from kiln.stages import parts_for
from kiln.train.build import build_trainer
from kiln.train.checkpoint import checkpoint_dirs, latest_checkpoint
from kiln.train.manifest import verify_checkpoint
from tests.conftest import copy_run, start, tiny_config

ARGS = [
    "--train.max_steps",
    "24",
    "--train.eval_every",
    "0",
    "--train.checkpoint_every",
    "2",
    "--train.keep_checkpoints",
    "2",
    "--train.micro_batch_size",
    "16",
    "--train.precision",  # every process alike on any CPU (auto measures afresh in each one)
    "fp32",
]


def _kiln(run: Path, *args: str) -> subprocess.Popen:
    return start(
        [sys.executable, "-m", "kiln", "train", "--run-dir", str(run), *ARGS, *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _final_weights(run: Path) -> dict:
    return load_file(str(run / "checkpoints" / "step_24" / "model.safetensors"))


def _wait_for_step(run: Path, step: int, proc: subprocess.Popen) -> None:
    metrics = run / "metrics.jsonl"
    while proc.poll() is None:
        if metrics.exists() and any(
            json.loads(line).get("step", 0) >= step for line in metrics.read_text().splitlines() if line
        ):
            return
        time.sleep(0.005)
    raise AssertionError(f"training ended before step {step}: {proc.stderr.read()[-2000:]}")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _straight(tokenized_run, tmp_path) -> dict:
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "straight").root
    assert _kiln(run, "--overwrite").wait(timeout=300) == 0
    return _final_weights(run)


KILLED_AT = """
import os, signal, sys
from kiln.cli import main
from kiln.train import trainer

step = trainer.Trainer.train_step


def killed(self):  # SIGKILL in the middle of step {step}: its gradients are computed, not applied
    if self.step == {step} - 1:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self)


trainer.Trainer.train_step = killed
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("step", random.Random(25).sample(range(3, 21), 1))
def test_sigkill_at_a_random_step_then_resume_auto_is_bitwise_identical(tokenized_run, tmp_path, step):
    """The process kills itself at a chosen step (drawn once, seeded), so the kill cannot race the
    end of the run on a busy machine."""
    want = _straight(tokenized_run, tmp_path)
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "killed").root
    proc = subprocess.run(
        [sys.executable, "-c", KILLED_AT.format(step=step), "train", "--run-dir", str(run), *ARGS, "--overwrite"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert _kiln(run, "--resume", "auto").wait(timeout=300) == 0
    assert _same(_final_weights(run), want)


@pytest.mark.slow  # ~35 s: run by .ci/run after the default suite
def test_supervisor_restarts_a_killed_run_to_the_same_weights(tokenized_run, tmp_path):
    want = _straight(tokenized_run, tmp_path)
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "supervised").root
    supervisor = _kiln(run, "--overwrite", "--max-restarts", "2")
    _wait_for_step(run, 9, supervisor)
    (child,) = _children(supervisor.pid)
    os.kill(child, signal.SIGKILL)
    assert supervisor.wait(timeout=300) == 0
    assert "restart 1 of 2" in supervisor.stderr.read()
    assert _same(_final_weights(run), want)


def test_a_corrupt_latest_checkpoint_is_skipped(tokenized_run, tmp_path, corpus_dir, capsys):
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    stages.train(
        tiny_config(
            corpus_dir,
            **{
                "train.max_steps": "6",
                "train.checkpoint_every": "2",
                "train.keep_checkpoints": "3",
                "train.eval_every": "0",
            },
        ),
        run,
    )
    newest = run.checkpoints / "step_6"
    assert verify_checkpoint(newest) is None
    shard = next((newest / "dcp").glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-100])  # truncated, as by a full disk
    assert "dcp/" in verify_checkpoint(newest)
    assert latest_checkpoint(run.checkpoints, verify=True) == run.checkpoints / "step_4"
    assert "skipping checkpoint" in capsys.readouterr().err
    cfg = tiny_config(corpus_dir, **{"train.max_steps": "8", "train.checkpoint_every": "2", "train.eval_every": "0"})
    trainer = build_trainer(cfg, run, parts_for(cfg), resume="auto")
    assert trainer.step == 4
    for older in ("step_2", "step_4"):  # none left that passes its check: refused, not started afresh
        (run.checkpoints / older / "model.safetensors").write_bytes(b"x")
    metrics = run.metrics.read_bytes()
    with pytest.raises(KilnError, match="none matches its manifest"):
        build_trainer(cfg, run, parts_for(cfg), resume="auto")
    assert run.metrics.read_bytes() == metrics and len(checkpoint_dirs(run.checkpoints)) == 3


class _Poison:
    """Wraps an objective: the loss is NaN on the given calls (counted from 1)."""

    def __init__(self, objective, bad_calls: set[int]) -> None:
        self.objective, self.bad, self.calls = objective, bad_calls, 0

    def __getattr__(self, name):
        return getattr(self.objective, name)

    def loss(self, model, batch):
        self.calls += 1
        loss, metrics = self.objective.loss(model, batch)
        return (loss * float("nan") if self.calls in self.bad else loss), metrics


def _trainer(tokenized_run, tmp_path, corpus_dir, bad_calls):
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    cfg = tiny_config(corpus_dir, **{"train.max_steps": "10", "train.checkpoint_every": "4", "train.eval_every": "0"})
    trainer = build_trainer(cfg, run, parts_for(cfg))
    trainer.objective = _Poison(trainer.objective, bad_calls)
    return trainer, run


def test_a_nan_step_is_skipped_and_counted(tokenized_run, tmp_path, corpus_dir):
    trainer, run = _trainer(tokenized_run, tmp_path, corpus_dir, {3})
    out = trainer.fit()
    assert out["skipped_steps"] == 1 and out["steps"] == 10
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert [r["step"] for r in rows if r.get("skipped_step")] == [2]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_repeated_nan_steps_roll_back_with_a_lower_learning_rate(tokenized_run, tmp_path, corpus_dir):
    trainer, run = _trainer(tokenized_run, tmp_path, corpus_dir, {6, 7, 8})  # steps 6-8 fail, checkpoint at 4
    out = trainer.fit()
    assert out["skipped_steps"] == 3 and out["steps"] == 10
    rows = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    rollback = next(r for r in rows if "rollback_to" in r)
    assert rollback["rollback_to"] == 4 and rollback["lr_scale"] == 0.5
    assert trainer.lr_scale == 0.5


def test_sharded_checkpoint_converts_to_safetensors_and_back(tokenized_run, tmp_path, corpus_dir):
    from kiln.train.checkpoint import consolidate
    from kiln.train.verb import to_dcp

    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    stages.train(tiny_config(corpus_dir, **{"train.max_steps": "2", "train.eval_every": "0"}), run)
    ckpt = run.checkpoints / "step_2"
    written = {k: v.clone() for k, v in load_file(str(ckpt / "model.safetensors")).items()}  # not mapped
    stamp = (ckpt / "model.safetensors").stat().st_mtime_ns
    assert consolidate(ckpt) == ckpt / "model.safetensors"  # whole (its manifest says so): left as it is
    assert (ckpt / "model.safetensors").stat().st_mtime_ns == stamp
    (ckpt / "model.safetensors").write_bytes(b"damaged")  # rebuilt from dcp/ when damaged or missing
    assert _same(load_file(str(consolidate(ckpt))), written)
    (ckpt / "model.safetensors").unlink()
    assert _same(load_file(str(consolidate(ckpt))), written)
    back = to_dcp(ckpt, tmp_path / "weights_dcp")
    again = tmp_path / "again"
    (again / "dcp").parent.mkdir()
    import shutil

    shutil.copytree(back, again / "dcp")
    shutil.copyfile(ckpt / "config.json", again / "config.json")
    full = {k: v for k, v in load_file(str(consolidate(again))).items()}
    assert _same(full, written)
    left = tmp_path / ".staged-w2"  # a conversion killed midway: its DCP files go, the next one is whole
    shutil.copytree(back, left)
    (left / ".metadata").rename(left / ".metadata.tmp")  # DCP's last step, a rename, not made
    assert _same(load_file(str(consolidate(_as_checkpoint(to_dcp(ckpt, tmp_path / "w2"), ckpt)))), written)
    assert not left.exists()
    mine = tmp_path / ".staged-w3"  # a folder of the user's at that name: never deleted
    mine.mkdir()
    (mine / "important.txt").write_text("mine")
    with pytest.raises(KilnError, match="not one kiln left behind"):
        to_dcp(ckpt, tmp_path / "w3")
    assert (mine / "important.txt").read_text() == "mine" and not (tmp_path / "w3").exists()


def _as_checkpoint(dcp_folder: Path, like: Path) -> Path:
    """A checkpoint folder holding `dcp_folder` as its dcp/ and `like`'s config (for `consolidate`)."""
    import shutil

    folder = dcp_folder.with_name(f"{dcp_folder.name}_ckpt")
    shutil.copytree(dcp_folder, folder / "dcp")
    shutil.copyfile(like / "config.json", folder / "config.json")
    return folder


def test_asynchronous_checkpoints_resume_to_the_same_weights(tokenized_run, tmp_path, corpus_dir):
    _, src = tokenized_run

    def cfg(**kw):
        return tiny_config(
            corpus_dir, **{"train.max_steps": "8", "train.eval_every": "0", "train.checkpoint_every": "2", **kw}
        )

    sync, asyn = copy_run(src, tmp_path / "sync"), copy_run(src, tmp_path / "async")
    stages.train(cfg(), sync)
    stages.train(cfg(**{"train.max_steps": "5", "train.async_checkpoint": "true"}), asyn)
    assert latest_checkpoint(asyn.checkpoints, verify=True).name == "step_5"  # published at the end
    assert verify_checkpoint(asyn.checkpoints / "step_4") is None  # published when the next save began
    stages.train(cfg(**{"train.async_checkpoint": "true"}), asyn, resume=True)
    assert _same(
        load_file(str(sync.checkpoints / "step_8" / "model.safetensors")),
        load_file(str(asyn.checkpoints / "step_8" / "model.safetensors")),
    )


def test_a_checkpoint_saved_again_at_its_step_is_kept_until_the_new_one_is_in_place(
    tokenized_run, tmp_path, corpus_dir, monkeypatch
):
    """A stop request right after resuming does not write the checkpoint again; a save of a step that
    has a checkpoint renames the old one aside, so a crash between the renames still leaves it."""
    import signal

    import kiln.train.checkpoint as checkpoint

    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    sets = {"train.checkpoint_every": "2", "train.keep_checkpoints": "1", "train.eval_every": "0"}
    stages.train(tiny_config(corpus_dir, **{"train.max_steps": "4", **sets}), run)
    step_4 = run.checkpoints / "step_4"
    written = (step_4 / "manifest.json").stat().st_mtime_ns
    cfg = tiny_config(corpus_dir, **{"train.max_steps": "8", **sets})
    trainer = build_trainer(cfg, run, parts_for(cfg), resume="auto")
    trainer.stop.signum = signal.SIGTERM  # a stop before the first step
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert (step_4 / "manifest.json").stat().st_mtime_ns == written  # not written again
    real, calls = os.replace, []

    def crash_on_publishing(src, dst):
        calls.append(Path(dst).name)
        if Path(src).name == ".tmp_step_4":
            raise OSError("killed")
        real(src, dst)

    monkeypatch.setattr(checkpoint.os, "replace", crash_on_publishing)
    with pytest.raises(OSError, match="killed"):
        trainer.save()
    monkeypatch.setattr(checkpoint.os, "replace", real)
    assert calls == [".old_step_4", "step_4"] and not step_4.exists()  # aside, then the crash
    (kept,) = checkpoint.checkpoint_dirs(run.checkpoints)
    assert kept.name == ".old_step_4" and latest_checkpoint(run.checkpoints, verify=True) == kept
    assert trainer.save() == step_4 and [p.name for p in checkpoint.checkpoint_dirs(run.checkpoints)] == ["step_4"]
    assert verify_checkpoint(step_4) is None and not (run.checkpoints / ".old_step_4").exists()


def test_a_checkpoint_is_on_disk_before_its_name_says_it_is_whole(tokenized_run, tmp_path, corpus_dir, rename_log):
    """Every file and folder of a checkpoint is synced before the rename that publishes it, and the
    checkpoints folder after: a power loss leaves the last checkpoint or the new one, whole."""
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    stages.train(tiny_config(corpus_dir, **{"train.max_steps": "2", "train.eval_every": "0"}), run)
    assert verify_checkpoint(run.checkpoints / "step_2") is None
    rename_log.check()


@pytest.mark.parametrize("python", ["3.11+", "3.10"])
def test_the_restarted_child_imports_nothing_from_the_working_folder(tmp_path, monkeypatch, python):
    """`python -m kiln` would put the folder the user trains from first on the import path: a numpy.py
    there would run in the supervised child."""
    from kiln.train.supervise import kiln_command

    if python == "3.10":
        monkeypatch.setattr(sys, "version_info", (3, 10, 0))
    (tmp_path / "numpy.py").write_text("open('imported', 'w').write('ran')\n")
    proc = subprocess.run([*kiln_command(), "train", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "--max-restarts" in proc.stdout and not (tmp_path / "imported").exists()
