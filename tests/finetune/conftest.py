"""A small pretrained checkpoint every fine-tuning test starts from."""

import pytest

from kiln import stages
from tests.conftest import copy_run, tiny_config


@pytest.fixture(scope="session")
def pretrained(tokenized_run, tmp_path_factory, corpus_dir):
    _, src = tokenized_run
    run = copy_run(src, tmp_path_factory.mktemp("pre"))
    stages.train(tiny_config(corpus_dir, **{"train.max_steps": "10"}), run)
    return run.checkpoints / "step_10"
