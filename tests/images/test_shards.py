"""Image shards: rows say where the images are and score only text; the loader mixes text rows in,
is deterministic, resumes at its position and slices ranks out of one global batch."""

import numpy as np
import pytest
import torch

from kiln.errors import KilnError
from kiln.images.curate import curated_docs
from kiln.images.shards import ImageLoader, ImageShardSet, image_data, write_image_shards
from kiln.images.stages import _fitted
from kiln.shards.loader import ShardSet
from kiln.tokenizer import load_tokenizer, objective_ids, tokenizer_hash
from tests.conftest import copy_run


def _parts(vlm_run):
    cfg, run = vlm_run
    tok = load_tokenizer(run.tokenizer)
    return cfg, run, tok, objective_ids(tok)


def test_rows_hold_the_image_block_then_the_caption(vlm_run):
    cfg, run, tok, ids = _parts(vlm_run)
    shards = ImageShardSet(run.image_split("train"))
    shards.verify()
    assert len(shards) == 1200 and shards.width == 1 + (4 + 2) + 12 + 1
    batch = shards.take([0, 1], cfg.train.seq_len, ids)
    inputs, targets = batch["inputs"], batch["targets"]
    assert inputs.shape == targets.shape == (2, 24) and batch["pixels"].shape == (2, 1, 16, 16, 3)
    row = inputs[0].tolist()
    assert row[:7] == [ids.bos, ids.image_start, *[ids.image] * 4, ids.image_end]
    scored = [t for t in targets[0].tolist() if t != -100]
    item = shards.items()[0]
    assert tok.decode(scored[:-1]).strip() == item["text"] and scored[-1] == ids.eos
    assert (targets[inputs == ids.image] == -100).all()  # no loss on predicting patches
    assert int(batch["num_images"][0]) == 1 and batch["pixels"][0].float().std() > 0


def _loader(cfg, run, ids, rank=0, world=1):
    text = ShardSet(run.split("train"))
    loader, _ = image_data(
        run.image_split("train"),
        run.image_split("val"),
        text,
        ids,
        tokenizer_hash(run.tokenizer),
        cfg.train,
        0.25,
        rank,
        world,
    )
    return loader


def test_the_loader_mixes_text_rows_resumes_and_slices_ranks(vlm_run):
    cfg, run, tok, ids = _parts(vlm_run)
    a = _loader(cfg, run, ids)
    assert isinstance(a, ImageLoader) and a.num_text == 2 and a.per_batch == 6
    straight = [a.next_batch() for _ in range(5)]
    first = straight[0]
    assert (first["num_images"][:2] == 0).all() and (first["num_images"][2:] == 1).all()
    assert not (first["inputs"][:2] == ids.image).any() and (first["targets"][:2] != -100).all()
    b = _loader(cfg, run, ids)
    for _ in range(2):
        b.next_batch()
    c = _loader(cfg, run, ids)
    c.load_state_dict(b.state_dict())
    for want in straight[2:]:
        got = c.next_batch()
        assert all(torch.equal(want[k], got[k]) for k in want)
    ranks = [_loader(cfg, run, ids, r, 2) for r in (0, 1)]
    one = _loader(cfg, run, ids)
    one.per_batch, one.num_text = 12, 0  # one process taking the global batch's image rows
    one.text = None
    both = torch.cat([r.next_batch()["pixels"][2:] for r in ranks])
    assert torch.equal(both, one.next_batch()["pixels"])


def test_an_interleaved_document_places_each_image_where_its_mark_is(vlm_run):
    from kiln.images.readers import IMAGE_MARK
    from kiln.images.shards import encode_doc

    _, run, tok, ids = _parts(vlm_run)
    row, cut = encode_doc(f"the union {IMAGE_MARK} is strong {IMAGE_MARK} and free", 2, tok, ids, 4, 40)
    block = [ids.image_start, *[ids.image] * 4, ids.image_end]
    starts = [i for i, t in enumerate(row) if t == ids.image_start]
    assert len(starts) == 2 and all(row[s : s + 6] == block for s in starts) and cut == 0
    assert tok.decode(row[1 : starts[0]]).strip() == "the union" and row[-1] == ids.eos
    _, cut = encode_doc("the union is strong and free " * 10, 1, tok, ids, 4, 8)
    assert cut > 0  # counted in the manifest's docs_with_text_cut


def test_image_shards_that_fail_mid_split_leave_the_last_ones(vlm_run, tmp_path):
    cfg, source = vlm_run
    run = copy_run(source, tmp_path / "run")
    tok = load_tokenizer(run.tokenizer)
    folder = run.image_split("val")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}

    def broken():
        yield from _fitted(curated_docs(run.curated_images, "val"))
        raise KilnError("an image in the last tar is truncated")

    with pytest.raises(KilnError, match="truncated"):
        write_image_shards(broken(), tok, tokenizer_hash(run.tokenizer), objective_ids(tok), folder, 16, 8, 1, 12)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    ImageShardSet(folder).verify()


@pytest.mark.parametrize("seen", [-5, 2.5, True, "3"])
def test_an_image_loader_position_that_is_no_count_is_refused(seen):
    from types import SimpleNamespace

    from kiln.images.shards import ImageLoader

    loader = SimpleNamespace(text=None, samples_seen=0)
    with pytest.raises(ValueError, match="samples_seen must be a count"):
        ImageLoader.load_state_dict(loader, {"samples_seen": seen})  # the trainer turns it into one line


def test_an_image_shard_set_that_disagrees_with_its_manifest_is_refused_on_opening(vlm_run, tmp_path):
    """Crafted or damaged: a manifest of the wrong shape, or arrays of another width, size or length
    failed mid-training (or trained on rows of one repeated token)."""
    import json
    import shutil

    _, run = vlm_run
    folder = tmp_path / "train"
    shutil.copytree(run.image_split("train"), folder)
    manifest = folder / "manifest.json"
    good = json.loads(manifest.read_text())
    for bad in ([], {**good, "files": []}, {**good, "width": good["width"] + 1}, {**good, "image_size": 3}):
        manifest.write_text(json.dumps(bad))
        with pytest.raises(KilnError, match="manifest|disagree"):
            ImageShardSet(folder)
    manifest.write_text(json.dumps(good))
    tokens = folder / good["files"][0]["tokens"]["file"]
    np.save(tokens, np.load(tokens)[:, 0])  # one token a row
    with pytest.raises(KilnError, match="disagree with the manifest"):
        ImageShardSet(folder)
