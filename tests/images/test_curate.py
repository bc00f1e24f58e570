"""Image curation: size and aspect filters, caption steps, exact and perceptual-hash duplicates, the
split, and a data card that counts each."""

import io
import json

import numpy as np
import pytest
from PIL import Image

from kiln.curate.config import CurateConfig
from kiln.errors import KilnError
from kiln.images.config import ImageConfig
from kiln.images.curate import NearImageIndex, curate_images, curated_docs, dhash


def photo(seed: int, size=(64, 48)) -> Image.Image:
    """A smooth random picture (what a perceptual hash is made for)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def test_a_re_encoded_resized_copy_is_near_and_another_picture_is_not():
    a = photo(0)
    buffer = io.BytesIO()
    a.resize((50, 38)).save(buffer, format="JPEG", quality=70)
    copy = Image.open(io.BytesIO(buffer.getvalue()))
    index = NearImageIndex(distance=6)
    index.add(dhash(a))
    assert index.find(dhash(copy)) is not None
    assert all(index.find(dhash(photo(s))) is None for s in range(1, 20))


def test_curation_filters_deduplicates_and_counts(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pictures = {f"p{i:02d}": photo(i) for i in range(40)}
    pictures["dup_exact"] = pictures["p00"].copy()
    pictures["dup_near"] = pictures["p01"].resize((60, 45))
    pictures["tiny"] = photo(50, (6, 6))
    pictures["long"] = photo(51, (200, 20))
    for key, image in pictures.items():
        image.save(src / f"{key}.png")
        (src / f"{key}.txt").write_text(f"A  picture number {key}\u200b with some colours.")
    (src / "nocaption.png").write_bytes(b"\x89PNG broken")
    (src / "nocaption.txt").write_text("x")
    out = tmp_path / "out"
    cfg = ImageConfig(source=str(src), val_fraction=0.25, dedup_distance=6)
    manifest = curate_images(cfg, CurateConfig(), out, 16)
    assert manifest["dropped"] == {"duplicate_exact": 1, "duplicate_near": 1, "too_small": 1, "aspect": 1}
    assert manifest["skipped"] == {"unreadable": 1}
    assert manifest["kept"]["train"] + manifest["kept"]["val"] == 40 and manifest["kept"]["val"] >= 3
    card = (out / "data_card.md").read_text()
    assert "duplicate_near | 1" in card and "kept: val" in card
    assert json.loads((out / "data_card.json").read_text())["read"] == 44
    docs = list(curated_docs(out, "train"))
    assert all(d.images[0].size == (16, 16) for d in docs)
    assert all("\u200b" not in d.text and "  " not in d.text for d in docs)  # the text steps ran
    again = curate_images(cfg, CurateConfig(), tmp_path / "again", 16)
    assert [d.key for d in curated_docs(tmp_path / "again", "train")] == [d.key for d in docs]
    assert again["kept"] == manifest["kept"]


def test_a_refused_image_curation_leaves_the_last_one(tmp_path):
    """A missing source or one whose pairs all fail stops with its error and removes nothing."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        photo(i).save(src / f"p{i:02d}.png")
        (src / f"p{i:02d}.txt").write_text(f"A picture number {i} with some colours.")
    out = tmp_path / "out"
    curate_images(ImageConfig(source=str(src), val_fraction=0.25, dedup_near=False), CurateConfig(), out, 16)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert any(n.endswith(".tar") for n in before) and "manifest.json" in before
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    photo(0, (4, 4)).save(tiny / "a.png")
    (tiny / "a.txt").write_text("too small to keep")
    for source in (tmp_path / "typo", tiny):
        with pytest.raises(KilnError):
            curate_images(ImageConfig(source=str(source)), CurateConfig(), out, 16)
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_documents_whose_keys_differ_only_by_a_slash_or_a_dot_stay_two(tmp_path):
    src = tmp_path / "src"
    (src / "x").mkdir(parents=True)
    for i, key in enumerate(["x/a", "x_a", "x.a", *(f"z{j:02d}" for j in range(8))]):
        photo(i).save(src / f"{key}.png")
        (src / f"{key}.txt").write_text(f"picture {key} in colour")
    manifest = curate_images(ImageConfig(source=str(src), val_fraction=0.3), CurateConfig(), tmp_path / "out", 16)
    keys = [d.key for split in ("train", "val") for d in curated_docs(tmp_path / "out", split)]
    assert sum(manifest["kept"].values()) == len(keys) == 11 and {"x/a", "x_a", "x.a"} <= set(keys)
