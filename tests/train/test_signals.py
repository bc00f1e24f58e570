"""Stopping on a signal: a supervised run (`kiln train --max-restarts`) stops as an unsupervised one
does, checkpointing first, whether the signal reaches the supervisor alone or its whole group."""

import os
import signal
import subprocess
import sys
import time

import pytest

CHILD = """
import sys, time
from pathlib import Path
from kiln.train.signals import stop_on_signals

done = Path(sys.argv[1])
try:
    with stop_on_signals() as stop:
        Path(str(done) + ".ready").write_text("")
        while not stop:  # a training step
            time.sleep(0.01)
        time.sleep(1.5)  # finishing the step and saving: a second request would cut it short
        done.write_text("checkpoint")
except KeyboardInterrupt:
    sys.exit(131)  # cut short: no checkpoint
sys.exit(130)
"""

SUPERVISOR = """
import sys
from kiln.train.supervise import run_child
sys.exit(run_child([sys.executable, "-c", sys.argv[1], sys.argv[2]]))
"""


@pytest.mark.parametrize("to", ["supervisor", "group"])  # kill PID; a terminal's Ctrl-C or a scheduler
def test_a_supervised_run_checkpoints_and_stops_on_one_signal(tmp_path, to):
    done = tmp_path / "done"
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, CHILD, str(done)],
        start_new_session=True,  # a group of its own
    )
    try:
        deadline = time.monotonic() + 60
        while not done.with_name("done.ready").exists():
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        if to == "supervisor":
            proc.send_signal(signal.SIGTERM)  # the child hears of it only through the supervisor
        else:
            os.killpg(proc.pid, signal.SIGINT)  # both hear it, the child twice: one request
        assert proc.wait(timeout=60) == 130
        assert done.read_text() == "checkpoint"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
