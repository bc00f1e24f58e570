"""Text to token shards: flat uint16/uint32 files plus a manifest.

A shard directory holds ``shard_NNNNN.bin`` (tokens, native little-endian), ``shard_NNNNN.docs.npy``
(int64 document start offsets into that shard, plus the end) and ``manifest.json`` (dtype,
tokenizer hash, counts, per-file sha256). Each document is stored as ``<|bos|> tokens <|eos|>``.
Documents are encoded in batches with ``encode_batch`` (parallel in Rust) so memory stays bounded by
``batch_bytes`` however large the corpus is. Files appear under their final names only when complete.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from kiln.corpus import Document, utf8_size
from kiln.rundir import MANIFEST
from kiln.shards.config import ShardConfig
from kiln.tokenizer import special_ids

FORMAT = "kiln-shards-v1"


def token_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits, else uint32."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _batches(docs: Iterable[Document], batch_bytes: int) -> Iterator[list[Document]]:
    batch: list[Document] = []
    size = 0
    for doc in docs:
        batch.append(doc)
        size += len(doc.text)
        if size >= batch_bytes:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class _ShardFile:
    """One shard being written: tokens streamed to a temp file, hashed on the way."""

    def __init__(self, out_dir: Path, index: int) -> None:
        self.name = f"shard_{index:05d}"
        self.tmp = out_dir / f".{self.name}.bin.tmp"
        self.final = out_dir / f"{self.name}.bin"
        self.f = self.tmp.open("wb")
        self.sha = hashlib.sha256()
        self.offsets = [0]
        self.num_bytes = 0

    def add(self, tokens: np.ndarray, text_bytes: int) -> None:
        data = tokens.tobytes()
        self.f.write(data)
        self.sha.update(data)
        self.offsets.append(self.offsets[-1] + len(tokens))
        self.num_bytes += text_bytes

    def close(self, out_dir: Path) -> dict:
        self.f.close()
        os.replace(self.tmp, self.final)
        docs_file = out_dir / f"{self.name}.docs.npy"
        np.save(docs_file, np.asarray(self.offsets, dtype=np.int64))
        return {
            "file": self.final.name,
            "docs_file": docs_file.name,
            "num_tokens": self.offsets[-1],
            "num_documents": len(self.offsets) - 1,
            "num_bytes": self.num_bytes,
            "sha256": self.sha.hexdigest(),
        }


class ShardWriter:
    """Writes one shard directory: documents in, shard files and a manifest out."""

    def __init__(self, out_dir: Path, tok: Tokenizer, tokenizer_sha256: str, cfg: ShardConfig) -> None:
        self.out_dir, self.cfg, self.tokenizer_sha256 = out_dir, cfg, tokenizer_sha256
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in list(out_dir.glob("shard_*")) + list(out_dir.glob(MANIFEST)):
            stale.unlink()
        self.ids = special_ids(tok)
        self.vocab_size = tok.get_vocab_size()
        self.dtype = token_dtype(self.vocab_size)
        self.bos = np.array([self.ids["bos"]], dtype=self.dtype)
        self.eos = np.array([self.ids["eos"]], dtype=self.dtype)
        self.shards: list[dict] = []
        self.current = _ShardFile(out_dir, 0)

    def add(self, ids: list[int], num_bytes: int) -> None:
        """Append one document's token ids (without bos/eos) and its UTF-8 size."""
        tokens = np.concatenate([self.bos, np.asarray(ids, dtype=self.dtype), self.eos])
        if self.current.offsets[-1] > 0 and self.current.offsets[-1] + len(tokens) > self.cfg.shard_tokens:
            self.shards.append(self.current.close(self.out_dir))
            self.current = _ShardFile(self.out_dir, len(self.shards))
        self.current.add(tokens, num_bytes)

    def close(self) -> dict:
        """Finish the last shard and publish the manifest; returns it."""
        self.shards.append(self.current.close(self.out_dir))
        shards = self.shards
        manifest = {
            "format": FORMAT,
            "dtype": self.dtype.name,
            "tokenizer_sha256": self.tokenizer_sha256,
            "vocab_size": self.vocab_size,
            "bos_id": self.ids["bos"],
            "eos_id": self.ids["eos"],
            "num_tokens": sum(s["num_tokens"] for s in shards),
            "num_documents": sum(s["num_documents"] for s in shards),
            "num_bytes": sum(s["num_bytes"] for s in shards),
            "shards": shards,
        }
        tmp = self.out_dir / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(manifest, indent=2) + "\n")
        os.replace(tmp, self.out_dir / MANIFEST)
        return manifest


def write_shards(
    docs: Iterable[Document],
    tok: Tokenizer,
    tokenizer_sha256: str,
    out_dirs: dict[str, Path],
    cfg: ShardConfig,
    route: Callable[[Document], str] | None = None,
    desc: str = "tokenize",
) -> dict[str, dict]:
    """Tokenize `docs` in one pass into one shard directory per split; returns {split: manifest}.

    `route(doc)` names each document's split (a key of `out_dirs`); with one directory it may be None.
    """
    if route is None:
        (only,) = out_dirs

        def route(doc: Document) -> str:
            return only

    docs = iter(docs)
    first = next(docs, None)  # a missing or empty corpus stops here, before the last shards are removed
    writers = {name: ShardWriter(path, tok, tokenizer_sha256, cfg) for name, path in out_dirs.items()}
    bar = tqdm(desc=desc, unit="B", unit_scale=True, dynamic_ncols=True, mininterval=0.5)
    for batch in _batches(itertools.chain([first] if first is not None else [], docs), cfg.batch_bytes):
        # encode_batch_fast skips the character offsets we do not need (docs/benchmarks.md: tokenize)
        encodings = tok.encode_batch_fast([d.text for d in batch], add_special_tokens=False)
        for doc, enc in zip(batch, encodings):
            num_bytes = utf8_size(doc.text)
            writers[route(doc)].add(enc.ids, num_bytes)
            bar.update(num_bytes)
    bar.close()
    return {name: writer.close() for name, writer in writers.items()}
