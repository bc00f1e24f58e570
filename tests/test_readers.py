"""Every input format, and every kind of bad input: counted skips with file and line, good documents kept."""

import gzip
import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from kiln.corpus import (
    CorpusConfig,
    ReadStats,
    SourceConfig,
    read_documents,
    sources_of,
)
from kiln.errors import KilnError

ROWS = [{"id": f"r{i}", "text": f"document number {i}", "lang": "en"} for i in range(5)]


def _jsonl(rows) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def _read(path, **kw):
    stats = ReadStats(log=io.StringIO())
    docs = list(read_documents(CorpusConfig(corpus=str(path), **kw), stats))
    return docs, stats


@pytest.mark.parametrize(
    "name, pack",
    [
        ("a.jsonl", lambda b: b),
        ("a.jsonl.gz", gzip.compress),
        ("a.jsonl.zst", lambda b: zstandard.ZstdCompressor().compress(b)),
    ],
)
def test_jsonl_plain_and_compressed(tmp_path, name, pack):
    (tmp_path / name).write_bytes(pack(_jsonl(ROWS)))
    docs, stats = _read(tmp_path / name)
    assert [d.id for d in docs] == [r["id"] for r in ROWS] and docs[2].text == "document number 2"
    assert docs[0].metadata == {"lang": "en"} and stats.num_skipped == 0


def test_parquet_with_metadata_columns(tmp_path):
    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "a.parquet", row_group_size=2)
    docs, _ = _read(tmp_path / "a.parquet")
    assert [d.text for d in docs] == [r["text"] for r in ROWS] and docs[4].metadata == {"lang": "en"}


def test_bad_inputs_are_counted_skips_and_good_documents_survive(tmp_path):
    root = tmp_path / "mess"
    root.mkdir()
    (root / "a_good.txt").write_text("good text file")
    (root / "b_binary.txt").write_bytes(b"\x7fELF\x00\x00\x01" * 100)
    (root / "c_empty.txt").write_bytes(b"")
    (root / "d_invalid.txt").write_bytes(b"caf\xe9 ok")
    (root / "e_huge.txt").write_bytes(b"x" * 2_000_000)  # one 2 MB line, over the 1 MB limit set below
    truncated = gzip.compress(_jsonl(ROWS * 200))
    (root / "f_truncated.jsonl.gz").write_bytes(truncated[: len(truncated) // 2])
    (root / "g_malformed.jsonl").write_bytes(b'{"text": "fine one"}\n{"text": broken\n[1, 2]\n{"text": "fine two"}\n')
    pq.write_table(pa.Table.from_pylist([{"body": "no text column"}]), root / "h_notext.parquet")
    (root / "i_big_line.jsonl").write_bytes(
        json.dumps({"text": "y" * 2_000_000}).encode() + b"\n" + _jsonl([{"text": "after the big line"}])
    )
    docs, stats = _read(root, max_document_bytes=1_000_000)
    texts = [d.text for d in docs]
    assert texts[:2] == ["good text file", "caf\ufffd ok"]
    assert "fine one" in texts and "fine two" in texts and "after the big line" in texts
    assert sum(t.startswith("document number") for t in texts) > 100  # what the truncated .gz held before the cut
    log = stats.log.getvalue()
    for where, why in [
        ("b_binary.txt", "looks binary"),
        ("c_empty.txt", "empty file"),
        ("e_huge.txt", "over data.max_document_bytes"),
        ("f_truncated.jsonl.gz:", "truncated"),
        ("g_malformed.jsonl:2", "malformed JSON"),
        ("g_malformed.jsonl:3", "no string field"),
        ("h_notext.parquet", "no column 'text' (columns: body)"),
        ("i_big_line.jsonl:1", "over data.max_document_bytes"),
    ]:
        assert any(where in line and why in line for line in log.splitlines()), (where, why, log)
    assert stats.num_skipped == len(log.splitlines()) == 8
    assert stats.num_invalid_bytes == 1


def test_a_50_mb_single_line_is_skipped_not_loaded_into_the_pipeline(tmp_path):
    (tmp_path / "big.txt").write_bytes(b"word " * 10_000_000)
    (tmp_path / "small.txt").write_text("a small document")
    docs, stats = _read(tmp_path)
    assert [d.id for d in docs] == ["small.txt"] and "over data.max_document_bytes" in stats.skipped[0]


def test_wholly_unusable_input_is_one_clear_error(tmp_path):
    pq.write_table(pa.Table.from_pylist([{"body": "x"}]), tmp_path / "only.parquet")
    with pytest.raises(KilnError, match=r"no usable documents: .*only.parquet: no column 'text' \(columns: body\)"):
        _read(tmp_path / "only.parquet")
    (tmp_path / "junk.jsonl").write_bytes(b"\x00\x01\x02 binary")
    with pytest.raises(KilnError, match="no usable documents: .*looks binary"):
        _read(tmp_path / "junk.jsonl")


def test_named_sources_prefix_ids_and_carry_metadata(tmp_path):
    (tmp_path / "web.jsonl").write_bytes(_jsonl(ROWS[:3]))
    (tmp_path / "books").mkdir()
    (tmp_path / "books" / "b.txt").write_text("a book")
    spec = [
        {"name": "web", "path": str(tmp_path / "web.jsonl"), "licence": "CC-BY", "weight": 2},
        {"name": "books", "path": str(tmp_path / "books"), "date": "1900-1950", "weight": 1},
    ]
    (tmp_path / "sources.json").write_text(json.dumps(spec))
    cfg = CorpusConfig(sources=str(tmp_path / "sources.json"))
    assert [s.name for s in sources_of(cfg)] == ["web", "books"]
    docs = list(read_documents(cfg))
    assert [d.id for d in docs] == ["web/r0", "web/r1", "web/r2", "books/b.txt"]
    assert docs[0].metadata["source"] == "web" and docs[3].metadata["source"] == "books"
    (tmp_path / "bad.json").write_text(json.dumps([{"name": "x"}]))
    with pytest.raises(KilnError, match="needs 'name' and 'path'"):
        sources_of(CorpusConfig(sources=str(tmp_path / "bad.json")))
    with pytest.raises(KilnError):
        SourceConfig(name="a/b", path="x")


def test_text_with_a_byte_order_mark_is_decoded_and_binary_is_named(tmp_path):
    (tmp_path / "utf16.txt").write_bytes("Fellow-Citizens of the Senate: é".encode("utf-16"))
    (tmp_path / "utf8bom.txt").write_bytes("with a mark".encode("utf-8-sig"))
    (tmp_path / "raw.txt").write_bytes(b"\x00\x01\x02binary" * 10)
    docs, stats = _read(tmp_path)
    assert sorted(d.text for d in docs) == ["Fellow-Citizens of the Senate: é", "with a mark"]
    assert stats.num_skipped == 1 and "raw.txt" in stats.skipped[0] and "byte-order mark" in stats.skipped[0]
