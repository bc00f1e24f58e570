"""Real process groups on CPU (gloo, 2 processes launched by torchrun): DDP, FSDP2 and HSDP follow the
single-process loss curve, and sharded checkpoints resume at another world size."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_run, run_to_end, start

# fp32 so the comparison is about the parallelism, not bf16 rounding; global batch 16 in every layout
COMMON = [
    "--train.max_steps",
    "6",
    "--train.eval_every",
    "0",
    "--train.precision",
    "fp32",
    "--train.global_batch_size",
    "16",
    "--train.micro_batch_size",
    "4",
    "--train.checkpoint_every",
    "3",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(run_dir, *args, procs: int = 1) -> list[float]:
    launch = (
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            str(procs),
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_port()),
            "-m",
            "kiln",
        ]
        if procs > 1
        else [sys.executable, "-m", "kiln"]
    )
    done = run_to_end(
        [*launch, "train", "--run-dir", str(run_dir), *COMMON, *args], timeout=300, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if "loss" in r and r.get("loss") is not None]


@pytest.fixture(scope="module")
def single(tokenized_run, tmp_path_factory):
    _, src = tokenized_run
    run = copy_run(src, tmp_path_factory.mktemp("single") / "run")
    return _train(run.root, "--overwrite")


@pytest.mark.parametrize("mode", ["ddp", "fsdp", "hsdp"])
def test_two_processes_follow_the_single_process_loss_curve(mode, single, tokenized_run, tmp_path):
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    extra = ["--parallel.replicas", "2"] if mode == "hsdp" else []
    losses = _train(run.root, "--parallel.mode", mode, "--overwrite", *extra, procs=2)
    assert len(losses) == len(single) == 6
    # same samples per step, gradients averaged over ranks instead of micro-batches: equal up to the
    # order of fp32 sums (observed: equal to 5 decimals)
    assert max(abs(a - b) for a, b in zip(losses, single)) < 1e-4, (losses, single)


@pytest.mark.parametrize("first, then", [(2, 1), pytest.param(1, 2, marks=pytest.mark.slow)])
def test_sharded_checkpoint_resumes_at_another_world_size(first, then, single, tokenized_run, tmp_path):
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")

    def mode(n):
        return ["--parallel.mode", "fsdp" if n > 1 else "none"]

    _train(run.root, *mode(first), "--overwrite", procs=first)
    shutil.rmtree(run.checkpoints / "step_6")  # continue from step 3 in the other layout
    state = json.loads((run.checkpoints / "step_3" / "state.json").read_text())
    assert state["world_size"] == first and state["global_batch_size"] == 16
    losses = _train(run.root, *mode(then), "--resume", procs=then)
    assert max(abs(a - b) for a, b in zip(losses, single)) < 1e-4, (losses, single)


CHILDREN = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
"""Linux's list of a process's children (the test finds torchrun's workers there)."""


@pytest.mark.skipif(not CHILDREN.exists(), reason="finds the workers through Linux's /proc")
def test_a_dead_rank_stops_the_run_instead_of_hanging(tokenized_run, tmp_path):
    import signal
    import time

    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    proc = start(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_addr",
            "127.0.0.1",
            "--master_port",
            str(_port()),
            "-m",
            "kiln",
            "train",
            "--run-dir",
            str(run.root),
            "--parallel.mode",
            "ddp",
            "--overwrite",
            "--parallel.timeout_s",
            "30",
            *[a if a != "6" else "400" for a in COMMON],
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = run.root / "metrics.jsonl"
    while proc.poll() is None and not (metrics.exists() and metrics.read_text().count("\n") >= 2):
        time.sleep(0.05)
    workers = [int(p) for p in Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()]
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    # the survivors stop (torchrun sees the dead worker; parallel.timeout_s bounds a collective) instead
    # of hanging: a hang fails at this generous limit, which a busy machine does not reach
    assert proc.wait(timeout=240) != 0
    assert "Signal 9 (SIGKILL)" in proc.stderr.read()  # torchrun names the failed rank and its signal


@pytest.mark.slow
def test_activation_checkpointing_changes_memory_not_results(tokenized_run, tmp_path):
    _, src = tokenized_run
    plain = copy_run(src, tmp_path / "plain")
    recompute = copy_run(src, tmp_path / "ac")
    a = _train(plain.root, "--overwrite")
    b = _train(recompute.root, "--overwrite", "--parallel.activation_checkpointing", "block")
    assert a == b
    # its checkpoints use the model's own parameter names: eval loads them into an unwrapped model
    done = run_to_end(
        [sys.executable, "-m", "kiln", "eval", "--checkpoint", str(recompute.checkpoints / "step_6")],
        timeout=120,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize(
    "env, says",
    [
        ({"RANK": "abc"}, "RANK='abc' is not a whole number"),
        ({"WORLD_SIZE": "0"}, "not a launch torchrun makes"),
        ({"RANK": "3", "WORLD_SIZE": "2"}, "not a launch torchrun makes"),
    ],
)
def test_torchrun_variables_a_launcher_got_wrong_are_one_line(env, says, tmp_path):
    command = [sys.executable, "-m", "kiln", "train", "--preset", "debug", "--run-dir", str(tmp_path / "r")]
    proc = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr
