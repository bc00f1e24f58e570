import json
import random

import pytest

from kiln.corpus import (
    CorpusConfig,
    ReadStats,
    read_documents,
    split_documents,
    split_of,
)
from kiln.errors import KilnError


def test_builtin_corpus_ships_in_the_package():
    docs = list(read_documents(CorpusConfig(max_documents=3)))
    assert len(docs) == 3 and docs[0].id == "1790_george_washington_n"
    assert docs[0].metadata["year"] == 1790 and docs[0].text.startswith("Fellow-Citizens")


def test_folder_and_jsonl_read_the_same_way(tmp_path):
    (tmp_path / "a.txt").write_text("alpha text")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("beta text")
    (tmp_path / "ignored.bin").write_bytes(b"\x00\x01")
    stats = ReadStats()
    assert [d.text for d in read_documents(CorpusConfig(corpus=str(tmp_path)), stats)] == ["alpha text", "beta text"]
    assert stats.skipped == [f"{tmp_path / 'ignored.bin'}: unsupported file type"]
    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text(
        json.dumps({"text": "one", "id": "x"})
        + "\n{broken\n"
        + json.dumps({"body": "no text"})
        + "\n"
        + json.dumps({"text": "two"})
        + "\n"
    )
    stats = ReadStats()
    docs = list(read_documents(CorpusConfig(corpus=str(jsonl)), stats))
    assert [d.text for d in docs] == ["one", "two"] and docs[0].id == "x"
    assert stats.num_skipped == 2 and "c.jsonl:2" in stats.skipped[0]


def test_invalid_utf8_is_replaced_and_counted(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"good \xff\xfe bytes \xc3")
    stats = ReadStats()
    (doc,) = read_documents(CorpusConfig(corpus=str(tmp_path)), stats)
    assert doc.text == "good \ufffd\ufffd bytes \ufffd"
    assert stats.num_invalid_bytes == 3 and stats.num_documents_with_invalid_utf8 == 1


def test_split_is_deterministic_and_disjoint(corpus_dir):
    cfg = CorpusConfig(corpus=str(corpus_dir), val_fraction=0.2)
    train = [d.id for d in split_documents(cfg, "train")]
    val = [d.id for d in split_documents(cfg, "val")]
    assert train and val and not set(train) & set(val)
    assert len(train) + len(val) == 41
    assert all(split_of(i, cfg) == "val" for i in val)
    assert [d.id for d in split_documents(cfg, "val")] == val


@pytest.mark.parametrize(
    "make, fragment",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: p, "holds no readable files"),
        (lambda p: (p / "empty.txt").write_text("  \n") and p, "no usable documents: empty.txt: empty document"),
    ],
)
def test_unusable_corpus_gives_one_clear_error(tmp_path, make, fragment):
    path = make(tmp_path)
    with pytest.raises(KilnError, match=fragment):
        list(read_documents(CorpusConfig(corpus=str(path))))


def test_a_curated_set_is_not_read_as_a_raw_corpus(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "kiln-curated-v1", "files": []}))
    with pytest.raises(KilnError, match="is a curated set"):
        list(read_documents(CorpusConfig(corpus=str(tmp_path))))


def test_utf8_size_counts_encoded_bytes():
    from kiln.corpus import utf8_size

    for text in ["", "plain ascii", "café", "naïve – “quoted” ☃", "\U0001f600 emoji", "\x00\x7f"]:
        assert utf8_size(text) == len(text.encode("utf-8"))


def test_a_rows_own_source_field_is_kept_apart_from_kilns_source(tmp_path):
    """Dolma's and RedPajama's rows carry a "source": curation keys its per-source figures and the mix
    by the configured source's name, so the row's own field must not stand in for it."""
    from kiln.curate.config import CurateConfig
    from kiln.curate.pipeline import curate
    from tests.conftest import make_text

    rng = random.Random(5)
    jsonl = tmp_path / "dolma.jsonl"
    jsonl.write_text("".join(json.dumps({"text": make_text(rng, 40), "source": "arxiv"}) + "\n" for _ in range(12)))
    docs = list(read_documents(CorpusConfig(corpus=str(jsonl))))
    assert {d.metadata.get("source_field") for d in docs} == {"arxiv"} and "source" not in docs[0].metadata
    manifest = curate(CorpusConfig(corpus=str(jsonl)), CurateConfig(), tmp_path / "out")
    assert manifest["documents_out"] > 0


def test_a_folder_reads_linked_folders_once_and_counts_what_is_no_file(tmp_path):
    import os

    corpus, elsewhere = tmp_path / "corpus", tmp_path / "elsewhere"
    corpus.mkdir()
    elsewhere.mkdir()
    (corpus / "a.txt").write_text("alpha text")
    (elsewhere / "b.txt").write_text("beta text")
    (corpus / "linked").symlink_to(elsewhere)  # a data set kept on another disk
    (elsewhere / "back").symlink_to(corpus)  # a link back up: read once, no loop
    (corpus / "gone.txt").symlink_to(tmp_path / "nowhere.txt")
    os.mkfifo(corpus / "pipe.txt")  # opening it would block forever
    stats = ReadStats()
    docs = list(read_documents(CorpusConfig(corpus=str(corpus)), stats))
    assert sorted(d.text for d in docs) == ["alpha text", "beta text"]
    assert stats.num_skipped == 2 and all("not a file" in s for s in stats.skipped)
