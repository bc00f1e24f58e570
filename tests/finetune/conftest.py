"""A small pretrained checkpoint every fine-tuning test starts from, and a run stopped by SIGTERM."""

import signal
from contextlib import contextmanager

import pytest

from kiln import stages
from kiln.train import trainer as trainer_module
from tests.conftest import copy_run, tiny_config


@pytest.fixture(scope="session")
def pretrained(tokenized_run, tmp_path_factory, corpus_dir):
    _, src = tokenized_run
    run = copy_run(src, tmp_path_factory.mktemp("pre"))
    stages.train(tiny_config(corpus_dir, **{"train.max_steps": "10"}), run)
    return run.checkpoints / "step_10"


@contextmanager
def sigterm_at(step: int):
    """Within the block, a run stops as if sent SIGTERM once it completes optimizer step `step`."""
    original = trainer_module.Trainer.train_step

    def stopping(self):
        out = original(self)
        if self.step == step:
            self.stop.signum = signal.SIGTERM
        return out

    trainer_module.Trainer.train_step = stopping
    try:
        yield
    finally:
        trainer_module.Trainer.train_step = original
