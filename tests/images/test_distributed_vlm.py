"""The image+text model under FSDP2 on 2 gloo processes (its ViT blocks sharded too) follows the
single-process loss curve."""

import pytest

from tests.conftest import copy_run
from tests.train.test_distributed import _train

VIT = ["--model.vision.encoder", "vit", "--model.vision.encoder_layers", "1"]


@pytest.mark.slow
def test_fsdp_on_two_processes_matches_one(vlm_run, tmp_path):
    _, src = vlm_run
    single = _train(copy_run(src, tmp_path / "one").root, "--overwrite", *VIT)
    run = copy_run(src, tmp_path / "two")
    losses = _train(run.root, "--overwrite", "--parallel.mode", "fsdp", *VIT, procs=2)
    assert len(losses) == len(single) == 6
    assert max(abs(a - b) for a, b in zip(losses, single)) < 1e-4, (losses, single)
