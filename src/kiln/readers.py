"""File readers: .txt/.md, JSONL (plain, .gz, .zst, .xz) and Parquet, alone or in a folder.

Every reader streams `Document`s in a deterministic order. Bad input never crashes a run and never
loses the good documents around it: binary files, empty files, malformed JSON lines, rows without
the text field, documents over the size limit, truncated or corrupt compressed files and Parquet
files without the text column are each skipped and counted in `ReadStats` with the file (and line
or row), and written to its log when one is attached. Invalid UTF-8 is replaced with U+FFFD and
counted.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import lzma
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from kiln.errors import KilnError

TEXT_SUFFIXES = (".txt", ".md")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".jsonl.xz", ".json.gz")
PARQUET_SUFFIXES = (".parquet",)
SUPPORTED = TEXT_SUFFIXES + JSONL_SUFFIXES + PARQUET_SUFFIXES
_SURROGATES = re.compile("[\udc80-\udcff]")


@dataclass
class Document:
    """One document: a stable id, its text and whatever metadata the source gave."""

    id: str
    text: str
    metadata: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict, repr=False, compare=False)
    """Views derived from the text (e.g. word hashes) that steps share; never written out."""


@dataclass
class ReadStats:
    """What reading a corpus met: documents read, skipped inputs (with where and why), replaced bytes."""

    num_documents: int = 0
    num_bytes: int = 0
    num_invalid_bytes: int = 0
    num_documents_with_invalid_utf8: int = 0
    num_skipped: int = 0
    skipped: list[str] = field(default_factory=list)
    log: IO[str] | None = None
    """Where every skip is written, one `where: why` line each (the list keeps the first 100)."""

    def skip(self, where: str, why: str) -> None:
        self.num_skipped += 1
        line = f"{where}: {why}"
        if len(self.skipped) < 100:
            self.skipped.append(line)
        if self.log is not None:
            self.log.write(line + "\n")


def decode_text(raw: bytes, stats: ReadStats | None = None) -> str:
    """Decode UTF-8, replacing each invalid byte with U+FFFD and counting it in `stats`."""
    try:
        return raw.decode("utf-8")  # the common case, without scanning for escapes
    except UnicodeDecodeError:
        pass
    text = raw.decode("utf-8", errors="surrogateescape")
    bad = len(_SURROGATES.findall(text))
    if bad:
        text = _SURROGATES.sub("\ufffd", text)
        if stats is not None:
            stats.num_invalid_bytes += bad
            stats.num_documents_with_invalid_utf8 += 1
    return text


def _looks_binary(head: bytes) -> bool:
    return b"\x00" in head


BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),  # before UTF-16's: FF FE 00 00 starts with FF FE
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
BINARY = "looks binary (NUL bytes and no byte-order mark; UTF-16/32 text needs its BOM, or convert it to UTF-8)"
"""Why a file that is not text is skipped."""


def file_text(raw: bytes, stats: ReadStats | None = None) -> str | None:
    """A whole file's bytes as text: UTF-8 (invalid bytes replaced and counted), or UTF-8, UTF-16 or
    UTF-32 after a byte-order mark; None when it looks binary (NUL bytes without a mark)."""
    for bom, codec in BOMS:
        if raw.startswith(bom):
            text = raw.decode(codec, errors="replace")
            if stats is not None and "\ufffd" in text and codec != "utf-8-sig":
                stats.num_documents_with_invalid_utf8 += 1
            return text if codec != "utf-8-sig" else decode_text(raw[len(bom) :], stats)
    if _looks_binary(raw[:8192]):
        return None
    return decode_text(raw, stats)


def kind_of(path: Path) -> str | None:
    name = path.name.lower()
    for kind, suffixes in (("text", TEXT_SUFFIXES), ("jsonl", JSONL_SUFFIXES), ("parquet", PARQUET_SUFFIXES)):
        if name.endswith(suffixes):
            return kind
    return None


def _open_jsonl(path: Path) -> io.BufferedIOBase | IO[bytes]:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".xz"):
        return lzma.open(path, "rb")
    if name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(path.open("rb"), read_across_frames=True, closefd=True)
        return io.BufferedReader(raw, buffer_size=1 << 20)  # line iteration needs a buffered stream
    return path.open("rb")


def _stream_errors() -> tuple[type[BaseException], ...]:
    import zstandard

    return (EOFError, OSError, zlib.error, lzma.LZMAError, zstandard.ZstdError)


def read_text_file(path: Path, doc_id: str, stats: ReadStats, max_bytes: int) -> Iterator[Document]:
    size = path.stat().st_size
    if size == 0:
        stats.skip(str(path), "empty file")
        return
    if size > max_bytes:
        stats.skip(str(path), f"document of {size:,} bytes is over data.max_document_bytes={max_bytes:,}")
        return
    text = file_text(path.read_bytes(), stats)
    if text is None:
        stats.skip(str(path), BINARY)
        return
    yield Document(id=doc_id, text=text, metadata={"path": str(path)})


def read_jsonl(
    path: Path, text_field: str, stats: ReadStats, max_bytes: int, id_prefix: str = ""
) -> Iterator[Document]:
    """One document per line; a bad line is skipped and counted, the rest of the file still read."""
    if path.stat().st_size == 0:
        stats.skip(str(path), "empty file")
        return
    line_no = 0
    try:
        with _open_jsonl(path) as f:
            for line_no, raw in enumerate(f, 1):
                if line_no == 1 and _looks_binary(raw[:8192]):
                    stats.skip(str(path), BINARY + ", not JSONL")
                    return
                if not raw.strip():
                    continue
                if len(raw) > max_bytes:
                    stats.skip(f"{path}:{line_no}", f"line of {len(raw):,} bytes is over data.max_document_bytes")
                    continue
                try:
                    row = json.loads(decode_text(raw, stats))
                except json.JSONDecodeError as e:
                    stats.skip(f"{path}:{line_no}", f"malformed JSON ({e.msg})")
                    continue
                if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                    stats.skip(f"{path}:{line_no}", f"no string field {text_field!r}")
                    continue
                text = row.pop(text_field)
                doc_id = str(row.pop("id", f"{id_prefix or path.name}:{line_no}"))
                yield Document(id=doc_id, text=text, metadata=row)
    except _stream_errors() as e:
        stats.skip(
            f"{path}:{line_no + 1}", f"truncated or corrupt file, stopped reading here ({type(e).__name__}: {e})"
        )


def read_parquet(
    path: Path, text_field: str, stats: ReadStats, max_bytes: int, id_prefix: str = ""
) -> Iterator[Document]:
    """Row groups streamed in batches; other columns become metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        stats.skip(str(path), f"not a readable Parquet file ({e})")
        return
    columns = pf.schema_arrow.names
    if text_field not in columns:
        stats.skip(str(path), f"no column {text_field!r} (columns: {', '.join(columns)}); set data.text_field")
        return
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=1024):
            for rec in batch.to_pylist():
                row += 1
                text = rec.pop(text_field)
                if not isinstance(text, str):
                    stats.skip(f"{path}:row {row}", f"column {text_field!r} is not a string")
                    continue
                if len(text) > max_bytes:
                    stats.skip(f"{path}:row {row}", "document over data.max_document_bytes")
                    continue
                doc_id = str(rec.pop("id", f"{id_prefix or path.name}:{row}"))
                meta = {k: v for k, v in rec.items() if isinstance(v, (str, int, float, bool)) or v is None}
                yield Document(id=doc_id, text=text, metadata=meta)
    except (pa.ArrowException, OSError) as e:
        stats.skip(f"{path}:row {row + 1}", f"corrupt Parquet data, stopped reading here ({e})")


def read_file(
    path: Path, text_field: str, stats: ReadStats, max_bytes: int, rel: str | None = None
) -> Iterator[Document]:
    """Any supported file; `rel` names it in document ids (default: the file name)."""
    rel = rel or path.name
    kind = kind_of(path)
    if kind == "text":
        yield from read_text_file(path, rel, stats, max_bytes)
    elif kind == "jsonl":
        yield from read_jsonl(path, text_field, stats, max_bytes, rel)
    elif kind == "parquet":
        yield from read_parquet(path, text_field, stats, max_bytes, rel)
    else:
        raise KilnError(f"{path}: unsupported file type; kiln reads {', '.join(SUPPORTED)} or a folder of them")


def _entries(root: Path) -> list[Path]:
    """Every entry under `root` that is not a folder, in sorted path order, linked folders followed
    (each real folder once: a link back up does not loop)."""
    found, seen = [], set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders.sort()  # the same path wins for a folder reached twice, on every file system
        found += [Path(folder) / name for name in names]
    return sorted(found)


def read_folder(root: Path, text_field: str, stats: ReadStats, max_bytes: int) -> Iterator[Document]:
    """Every supported file under `root` (linked folders too), in sorted path order; other files, and
    entries that are no file (a link to nothing, a pipe), are skipped and counted."""
    files = []
    for p in _entries(root):
        if p.name.startswith("."):
            continue
        if not p.is_file():
            stats.skip(str(p), "not a file (a link to nothing, a pipe or a device)")
        elif kind_of(p):
            files.append(p)
        else:
            stats.skip(str(p), "unsupported file type")
    if not files:
        raise KilnError(
            f"folder {root} holds no readable files ({', '.join(SUPPORTED)}); "
            "point data.corpus at a folder with text files"
        )
    for path in files:
        yield from read_file(path, text_field, stats, max_bytes, str(path.relative_to(root)))
