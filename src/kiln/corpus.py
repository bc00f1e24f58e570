"""Read raw text documents: the built-in corpus, a folder of .txt/.md files, or a .jsonl file.

Every reader yields `Document`s in a deterministic order and never loads the whole corpus at once.
Invalid UTF-8 is replaced with U+FFFD and counted in `ReadStats`, never a crash. The train/validation
split is by document, decided by a hash of the document id, so it is stable when documents are
added or reordered.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Iterator, Literal

from kiln.config import require
from kiln.errors import KilnError

BUILTIN = "sotu"
TEXT_SUFFIXES = (".txt", ".md")
_SURROGATES = re.compile("[\udc80-\udcff]")
CURATED_MANIFEST = "manifest.json"


def _is_curated(path: Path) -> bool:
    try:
        return json.loads((path / CURATED_MANIFEST).read_text()).get("format") == "kiln-curated-v1"
    except (OSError, json.JSONDecodeError, AttributeError):
        return False


@dataclass
class CorpusConfig:
    corpus: str = BUILTIN
    """'sotu' for the built-in State of the Union corpus (1790-2021), or a path to a folder of
    .txt/.md files, a .jsonl file with one JSON object per line, or a `kiln curate` output folder."""
    text_field: str = "text"
    """JSONL only: the field that holds each document's text."""
    val_fraction: float = 0.05
    """Fraction of documents held out for validation (chosen by a hash of the document id)."""
    split_seed: int = 0
    """Changes which documents land in validation."""
    max_documents: int = 0
    """Read at most this many documents (0 reads all); for quick runs."""

    def __post_init__(self) -> None:
        require(0.0 < self.val_fraction < 1.0, f"data.val_fraction={self.val_fraction} must be in (0, 1); e.g. 0.05")
        require(self.max_documents >= 0, f"data.max_documents={self.max_documents} must be >= 0")


@dataclass
class Document:
    """One document: a stable id, its text and whatever metadata the source gave."""

    id: str
    text: str
    metadata: dict = field(default_factory=dict)


@dataclass
class ReadStats:
    """What reading a corpus met: documents read, skipped lines and replaced bytes."""

    num_documents: int = 0
    num_bytes: int = 0
    num_invalid_bytes: int = 0
    num_documents_with_invalid_utf8: int = 0
    num_skipped: int = 0
    skipped: list[str] = field(default_factory=list)

    def skip(self, where: str, why: str) -> None:
        self.num_skipped += 1
        if len(self.skipped) < 100:
            self.skipped.append(f"{where}: {why}")


def decode_text(raw: bytes, stats: ReadStats | None = None) -> str:
    """Decode UTF-8, replacing each invalid byte with U+FFFD and counting it in `stats`."""
    text = raw.decode("utf-8", errors="surrogateescape")
    bad = len(_SURROGATES.findall(text))
    if bad:
        text = _SURROGATES.sub("\ufffd", text)
        if stats is not None:
            stats.num_invalid_bytes += bad
            stats.num_documents_with_invalid_utf8 += 1
    return text


def _read_builtin(stats: ReadStats) -> Iterator[Document]:
    path = resources.files("kiln") / "data" / "sotu.jsonl.xz"
    with resources.as_file(path) as real, lzma.open(real, "rb") as f:
        for line in f:
            row = json.loads(line)
            text = row.pop("text")
            yield Document(id=row.pop("id"), text=text, metadata=row)


def _read_curated(root: Path, text_field: str, stats: ReadStats) -> Iterator[Document]:
    """A `kiln curate` output folder: the JSONL files its manifest lists, in order."""
    manifest = json.loads((root / CURATED_MANIFEST).read_text())
    for entry in manifest["files"]:
        yield from _read_jsonl(root / entry["file"], text_field, stats)


def _read_folder(root: Path, stats: ReadStats) -> Iterator[Document]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise KilnError(f"folder {root} holds no .txt or .md files; point data.corpus at a folder with text files")
    for path in files:
        raw = path.read_bytes()
        if b"\x00" in raw[:8192]:
            stats.skip(str(path), "looks binary (NUL bytes)")
            continue
        yield Document(id=str(path.relative_to(root)), text=decode_text(raw, stats), metadata={"path": str(path)})


def _read_jsonl(path: Path, text_field: str, stats: ReadStats) -> Iterator[Document]:
    with path.open("rb") as f:
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
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
            doc_id = str(row.pop("id", f"{path.name}:{line_no}"))
            yield Document(id=doc_id, text=text, metadata=row)


def read_documents(cfg: CorpusConfig, stats: ReadStats | None = None) -> Iterator[Document]:
    """Stream every non-empty document of the configured corpus, in a deterministic order."""
    stats = stats if stats is not None else ReadStats()
    if cfg.corpus == BUILTIN:
        docs = _read_builtin(stats)
    else:
        path = Path(cfg.corpus).expanduser()
        if not path.exists():
            raise KilnError(
                f"corpus path {path} does not exist; pass data.corpus=PATH (a folder of .txt/.md or a .jsonl) "
                f"or data.corpus={BUILTIN} for the built-in corpus"
            )
        if path.is_dir() and _is_curated(path):
            docs = _read_curated(path, "text", stats)
        elif path.is_dir():
            docs = _read_folder(path, stats)
        elif path.suffix.lower() == ".jsonl":
            docs = _read_jsonl(path, cfg.text_field, stats)
        elif path.suffix.lower() in TEXT_SUFFIXES:
            docs = iter([Document(id=path.name, text=decode_text(path.read_bytes(), stats))])
        else:
            raise KilnError(f"corpus {path} is not a folder, .jsonl, .txt or .md file; convert it to one of those")
    for doc in docs:
        if cfg.max_documents and stats.num_documents >= cfg.max_documents:
            break
        if not doc.text.strip():
            stats.skip(doc.id, "empty document")
            continue
        stats.num_documents += 1
        stats.num_bytes += len(doc.text.encode("utf-8"))
        yield doc
    if stats.num_documents == 0:
        raise KilnError(f"corpus {cfg.corpus} has no non-empty documents; add text or point data.corpus elsewhere")


def split_of(doc_id: str, cfg: CorpusConfig) -> Literal["train", "val"]:
    """Deterministic split by document: hash(seed, id) decides, independent of order and corpus size."""
    digest = hashlib.blake2b(f"{cfg.split_seed}:{doc_id}".encode(), digest_size=8).digest()
    return "val" if int.from_bytes(digest, "big") / 2**64 < cfg.val_fraction else "train"


def split_documents(cfg: CorpusConfig, split: Literal["train", "val"], stats: ReadStats | None = None) -> Iterator[Document]:
    """Stream the documents of one split."""
    return (doc for doc in read_documents(cfg, stats) if split_of(doc.id, cfg) == split)
