"""Image readers: folders, JSONL (pairs and interleaved documents) and WebDataset tars; every bad
input is a counted skip that names its file and key, and costs no good pair."""

import io
import json
import tarfile

import pytest
from PIL import Image

from kiln.errors import KilnError
from kiln.images.readers import IMAGE_MARK, ImageReadStats, decode_image, read_image_docs


def png(colour=(200, 30, 30), size=(12, 10)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(colour=(30, 30, 200)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def read(source, max_pixels=10_000):
    stats = ImageReadStats()
    return list(read_image_docs(source, max_pixels, stats)), stats


def test_decode_names_what_is_wrong_with_an_image():
    assert isinstance(decode_image(png(), 10_000), Image.Image)
    assert decode_image(b"", 10_000) == "empty"
    assert decode_image(b"not an image at all", 10_000) == "unreadable"
    assert decode_image(jpeg()[:200], 10_000) == "truncated"
    assert decode_image(png(size=(200, 100)), 10_000) == "too_large"  # known from the header alone
    assert decode_image(png(), 10_000).mode == "RGB"


def test_only_the_image_formats_kiln_reads_are_decoded():
    """Pillow knows formats by their bytes, whatever the name: PostScript (run by Ghostscript) and
    formats outside IMAGE_FORMATS are unreadable, never handed to a decoder."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    assert decode_image(eps, 10_000) == "unreadable"
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PPM")  # a format Pillow reads, not one of kiln's
    assert decode_image(buffer.getvalue(), 10_000) == "unreadable"
    for fmt in ("WEBP", "BMP", "GIF", "TIFF"):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8)).save(buffer, format=fmt)
        assert isinstance(decode_image(buffer.getvalue(), 10_000), Image.Image), fmt


def test_a_folder_of_pairs_keeps_the_good_ones_and_counts_the_bad(tmp_path):
    (tmp_path / "a.png").write_bytes(png())
    (tmp_path / "a.txt").write_text("a red box")
    (tmp_path / "b.jpg").write_bytes(jpeg())
    (tmp_path / "b.json").write_text(json.dumps({"caption": "a blue box", "source": "web"}))
    (tmp_path / "c.jpg").write_bytes(jpeg()[:200])  # truncated
    (tmp_path / "c.txt").write_text("broken")
    (tmp_path / "d.png").write_bytes(b"")  # zero bytes
    (tmp_path / "d.txt").write_text("empty")
    (tmp_path / "e.png").write_bytes(png())  # no caption
    (tmp_path / "f.png").write_bytes(png(size=(300, 300)))  # huge for max_pixels
    (tmp_path / "f.txt").write_text("huge")
    docs, stats = read(tmp_path)
    assert [(d.key, d.text) for d in docs] == [("a", "a red box"), ("b", "a blue box")]
    assert docs[1].meta["source"] == "web" and docs[0].images[0].size == (12, 10)
    assert stats.skipped == {"truncated": 1, "empty": 1, "no_text": 1, "too_large": 1}
    assert any("c.jpg" in s and "truncated" in s for s in stats.samples)


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_webdataset_tars_group_members_by_key(tmp_path):
    shard = tmp_path / "00000.tar"
    _tar(
        shard,
        [
            ("part/0001.jpg", jpeg()),
            ("part/0001.txt", b"first caption"),
            ("part/0002.png", png()),
            ("part/0002.json", json.dumps({"caption": "second caption", "width": 12}).encode()),
            ("part/0003.jpg", b"garbage"),
            ("part/0003.txt", b"bad image"),
            ("part/0004.txt", b"no image here"),
            ("part/0005.jpg", jpeg()),
            ("part/0005.txt", b"fifth"),
        ],
    )
    docs, stats = read(shard)
    assert [(d.key, d.text) for d in docs] == [
        ("part/0001", "first caption"),
        ("part/0002", "second caption"),
        ("part/0005", "fifth"),
    ]
    assert docs[1].meta["width"] == 12
    assert stats.skipped == {"unreadable": 1, "no_image": 1}
    assert any("00000.tar:part/0003" in s for s in stats.samples)


def test_a_damaged_tar_keeps_what_was_read_before_the_damage(tmp_path):
    shard = tmp_path / "cut.tar"
    _tar(shard, [(f"{i:04d}.{ext}", png() if ext == "png" else b"caption") for i in range(6) for ext in ("png", "txt")])
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2 + 100])
    docs, stats = read(shard)
    assert 1 <= len(docs) < 6 and all(d.text == "caption" for d in docs)
    assert stats.skipped == {"damaged_tar": 1} and "cut.tar" in stats.samples[0]


def test_a_compressed_tar_is_read_whole_and_a_cut_one_counted(tmp_path):
    """A .tar.gz's member offsets are in its decompressed stream, larger than the file: not damage."""
    import gzip

    plain = tmp_path / "shard.tar"
    members = [(f"{i:04d}.{e}", png() if e == "png" else b"caption " * 50) for i in range(6) for e in ("png", "txt")]
    _tar(plain, members)
    packed = tmp_path / "shard.tar.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    plain.unlink()
    docs, stats = read(packed)
    assert len(docs) == 6 and stats.skipped == {}
    packed.write_bytes(packed.read_bytes()[: packed.stat().st_size * 2 // 3])
    docs, stats = read(packed)
    assert len(docs) < 6 and stats.skipped == {"damaged_tar": 1}


def test_jsonl_pairs_and_interleaved_documents(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "x.png").write_bytes(png())
    (tmp_path / "img" / "y.jpg").write_bytes(jpeg())
    lines = [
        {"image": "img/x.png", "text": "a pair"},
        {"images": ["img/x.png", "img/y.jpg"], "text": f"first {IMAGE_MARK} then {IMAGE_MARK} end"},
        {"image": "img/missing.png", "text": "gone"},
        {"images": ["img/x.png"], "text": f"{IMAGE_MARK} and {IMAGE_MARK}"},  # two marks, one image
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    docs, stats = read(path)
    assert [d.text for d in docs] == ["a pair", f"first {IMAGE_MARK} then {IMAGE_MARK} end"]
    assert len(docs[1].images) == 2
    assert stats.skipped == {"missing": 1, "image_marks_mismatch": 1, "malformed (JSONDecodeError)": 1}
    with pytest.raises(KilnError, match="images.source"):
        read(tmp_path / "nothing.csv")


def test_jsonl_image_paths_stay_in_the_jsonl_folder_unless_allowed(tmp_path):
    outside = tmp_path / "secret.png"
    outside.write_bytes(png())
    data = tmp_path / "data"
    data.mkdir()
    (data / "ok.png").write_bytes(png())
    records = [
        {"image": "ok.png", "text": "a red box"},
        {"image": str(outside), "text": "absolute"},
        {"image": "../secret.png", "text": "climbs out"},
    ]
    (data / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    docs, stats = read(data / "pairs.jsonl")
    assert [d.text for d in docs] == ["a red box"] and stats.skipped == {"outside": 2}
    allowed = ImageReadStats()
    docs = list(read_image_docs(data / "pairs.jsonl", 10_000, allowed, paths_outside=True))
    assert [d.text for d in docs] == ["a red box", "absolute", "climbs out"]
