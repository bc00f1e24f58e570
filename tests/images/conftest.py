"""A tokenized image+text run (the shapes set at 16 x 16 pixels, 4 patches) made in-process."""

from __future__ import annotations

import pytest

from kiln import stages
from kiln.rundir import RunDir
from tests.conftest import tiny_config

VLM = {
    "model.family": "vlm",
    "tokenizer.image_tokens": "true",
    "images.source": "shapes",
    "images.num_train": "1200",
    "images.num_val": "48",
    "model.vision.image_size": "16",
    "images.max_text_tokens": "12",
    "images.dedup_near": "false",
    "model.vision.patch_size": "8",
    "train.seq_len": "24",
    "train.micro_batch_size": "8",
}


def vlm_config(corpus, **overrides: str):
    return tiny_config(corpus, **{**VLM, **overrides})


@pytest.fixture(scope="session")
def vlm_run(tmp_path_factory, corpus_dir):
    """Curated images, tokenizer and text + image shards (do not train in it: copy_run first)."""
    cfg = vlm_config(corpus_dir)
    run = RunDir(tmp_path_factory.mktemp("vlm"))
    stages.curate(cfg, run)
    stages.tokenizer(cfg, run)
    stages.tokenize(cfg, run)
    return cfg, run
