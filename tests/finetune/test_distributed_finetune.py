"""Fine-tuning on real process groups (gloo, 2 processes by torchrun): DPO under DDP and a
classification head under FSDP2 follow the single-process loss curve."""

import json

import pytest

from tests.conftest import run_to_end
from tests.finetune.test_classify import write_labelled
from tests.finetune.test_dpo import write_pairs
from tests.train.test_distributed import _port

COMMON = "--train.max_steps 4 --train.eval_every 0 --train.precision fp32 --train.global_batch_size 8"
COMMON += " --train.micro_batch_size 4 --train.checkpoint_every 4 --train.warmup_steps 1 --train.lr 3e-3"


def _finetune(run_dir, checkpoint, method, data, mode="none", procs=1):
    import sys

    launch = [sys.executable, "-m", "kiln"]
    if procs > 1:
        launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs)]
        launch += ["--master_addr", "127.0.0.1", "--master_port", str(_port()), "-m", "kiln"]
    args = ["finetune", "--checkpoint", str(checkpoint), "--method", method, "--data", str(data)]
    args += ["--run-dir", str(run_dir), "--parallel.mode", mode, *COMMON.split()]
    done = run_to_end([*launch, *args], timeout=300, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r.get("loss") is not None]


@pytest.mark.slow
@pytest.mark.parametrize("method, mode", [("dpo", "ddp"), ("classify", "fsdp")])
def test_two_processes_follow_one(pretrained, tmp_path, method, mode):
    data = (write_pairs if method == "dpo" else write_labelled)(tmp_path / "d.jsonl")
    single = _finetune(tmp_path / "one", pretrained, method, data)
    both = _finetune(tmp_path / "two", pretrained, method, data, mode, procs=2)
    assert len(single) == len(both) == 4
    assert max(abs(a - b) for a, b in zip(single, both)) < 1e-4, (single, both)
    if method == "classify":
        assert (tmp_path / "two" / "classification.json").exists()
