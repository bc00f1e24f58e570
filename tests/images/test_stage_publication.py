"""A stage that replaces several folders (text and image shards; curated text and images) replaces
all of them or none: a failure in a later folder leaves the earlier ones as they were."""

import pytest

from kiln import stages
from kiln.config import replace
from kiln.errors import KilnError
from kiln.images import stages as image_stages
from tests.conftest import copy_run


def inodes(*folders):
    """Each file's inode: a file replaced by an identical one still counts as replaced."""
    return {p: p.stat().st_ino for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_image_split_leaves_the_text_shards_and_the_other_split(vlm_run, tmp_path, monkeypatch):
    cfg, source = vlm_run
    run = copy_run(source, tmp_path / "run")
    folders = (run.split("train"), run.split("val"), run.image_split("train"), run.image_split("val"))
    before = inodes(*folders)
    real = image_stages.curated_docs

    def truncated(folder, split):
        if split == "val":
            raise KilnError("an image in the last tar is truncated")
        return real(folder, split)

    monkeypatch.setattr(image_stages, "curated_docs", truncated)
    with pytest.raises(KilnError, match="truncated"):
        stages.tokenize(cfg, run)
    assert inodes(*folders) == before
    assert not [p for folder in folders for p in folder.glob(".staged-*")]
    monkeypatch.setattr(image_stages, "curated_docs", real)
    stages.tokenize(cfg, run)  # and a tokenize that succeeds replaces all four
    after = inodes(*folders)
    assert set(after) == set(before) and not set(after.items()) & set(before.items())


def test_a_failed_text_curation_leaves_the_curated_images(vlm_run, tmp_path):
    cfg, source = vlm_run
    run = copy_run(source, tmp_path / "run")
    before = inodes(run.curated_images, run.curated)
    typo = replace(cfg, data=replace(cfg.data, corpus=str(tmp_path / "typo")))
    with pytest.raises(KilnError):
        stages.curate(typo, run)
    assert inodes(run.curated_images, run.curated) == before
