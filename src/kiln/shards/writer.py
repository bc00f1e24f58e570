"""Text to token shards: flat uint16/uint32 files plus a manifest.

A shard directory holds ``shard_NNNNN.bin`` (tokens, native little-endian), ``shard_NNNNN.docs.npy``
(int64 document start offsets into that shard, plus the end) and ``manifest.json`` (dtype,
tokenizer hash, counts, per-file sha256). Each document is stored as ``<|bos|> tokens <|eos|>``.
Documents are encoded in batches with ``encode_batch`` (parallel in Rust) so memory stays bounded by
``batch_bytes`` however large the corpus is.

Nothing is lost on a failed run: shards are written under hidden staged names and replace the last
shards and manifest only when every split's shards are complete (and the caller's `check` of the new
manifests passes). A missing corpus, a bad document, Ctrl-C or a refused check removes the staged
files and leaves the folder as it was.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from kiln.corpus import Document, utf8_size
from kiln.shards.config import ShardConfig
from kiln.staging import Publication, StagedFolder
from kiln.tokenizer import literal, special_ids

FORMAT = "kiln-shards-v1"


TOKEN_DTYPES = ("uint16", "uint32")
"""The token dtypes a shard manifest may name (readers refuse any other: never an object array)."""


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
    """One shard being written under its staged name, hashed on the way."""

    def __init__(self, staging: StagedFolder, index: int) -> None:
        self.name = f"shard_{index:05d}"
        self.f = staging.path(f"{self.name}.bin").open("wb")
        self.docs_file = staging.path(f"{self.name}.docs.npy")
        self.sha = hashlib.sha256()
        self.offsets = [0]
        self.num_bytes = 0

    def add(self, tokens: np.ndarray, text_bytes: int) -> None:
        data = tokens.tobytes()
        self.f.write(data)
        self.sha.update(data)
        self.offsets.append(self.offsets[-1] + len(tokens))
        self.num_bytes += text_bytes

    def close(self) -> dict:
        self.f.close()
        np.save(self.docs_file, np.asarray(self.offsets, dtype=np.int64))
        return {
            "file": f"{self.name}.bin",
            "docs_file": f"{self.name}.docs.npy",
            "num_tokens": self.offsets[-1],
            "num_documents": len(self.offsets) - 1,
            "num_bytes": self.num_bytes,
            "sha256": self.sha.hexdigest(),
        }


class ShardWriter:
    """Writes one shard directory: documents in, staged shard files out (`finish`), then the last
    shards and manifest replaced by them (`publish`) or the staged files removed (`discard`)."""

    def __init__(self, out_dir: Path, tok: Tokenizer, tokenizer_sha256: str, cfg: ShardConfig) -> None:
        self.cfg, self.tokenizer_sha256 = cfg, tokenizer_sha256
        self.staging = StagedFolder(out_dir)
        self.ids = special_ids(tok)
        self.vocab_size = tok.get_vocab_size()
        self.dtype = token_dtype(self.vocab_size)
        self.bos = np.array([self.ids["bos"]], dtype=self.dtype)
        self.eos = np.array([self.ids["eos"]], dtype=self.dtype)
        self.shards: list[dict] = []
        self.current: _ShardFile | None = _ShardFile(self.staging, 0)

    def add(self, ids: list[int], num_bytes: int) -> None:
        """Append one document's token ids (without bos/eos) and its UTF-8 size."""
        assert self.current is not None, "add after finish"
        tokens = np.concatenate([self.bos, np.asarray(ids, dtype=self.dtype), self.eos])
        if self.current.offsets[-1] > 0 and self.current.offsets[-1] + len(tokens) > self.cfg.shard_tokens:
            self.shards.append(self.current.close())
            self.current = _ShardFile(self.staging, len(self.shards))
        self.current.add(tokens, num_bytes)

    def finish(self) -> dict:
        """Close the last shard; returns the manifest `publish` will write."""
        assert self.current is not None, "finish twice"
        self.shards.append(self.current.close())
        self.current = None
        shards = self.shards
        return {
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

    def publish(self, manifest: dict, publication: Publication | None = None) -> None:
        """Replace the last shards and manifest with the staged ones (now, or with `publication`)."""
        self.staging.publish_in(publication, ["shard_*"], manifest)

    def discard(self) -> None:
        """Remove the staged files; the published ones stay."""
        if self.current is not None:
            self.current.f.close()
            self.current = None
        self.staging.discard()


def write_shards(
    docs: Iterable[Document],
    tok: Tokenizer,
    tokenizer_sha256: str,
    out_dirs: dict[str, Path],
    cfg: ShardConfig,
    route: Callable[[Document], str] | None = None,
    desc: str = "tokenize",
    check: Callable[[dict[str, dict]], None] | None = None,
    publication: Publication | None = None,
) -> dict[str, dict]:
    """Tokenize `docs` in one pass into one shard directory per split; returns {split: manifest}.

    `route(doc)` names each document's split (a key of `out_dirs`); with one directory it may be None.
    `check(manifests)` may refuse the new shards by raising; they replace the last ones only after it
    passes, and on any failure (a corpus that cannot be read, an interrupt) the last ones stay.
    With a `publication`, they replace them when it publishes (kiln/staging.py).
    """
    if route is None:
        (only,) = out_dirs

        def route(doc: Document) -> str:
            return only

    writers: dict[str, ShardWriter] = {}
    tok = literal(tok)  # documents' text only: a quoted "<|eos|>" is text
    try:
        for name, path in out_dirs.items():
            writers[name] = ShardWriter(path, tok, tokenizer_sha256, cfg)
        bar = tqdm(desc=desc, unit="B", unit_scale=True, dynamic_ncols=True, mininterval=0.5)
        for batch in _batches(docs, cfg.batch_bytes):
            # encode_batch_fast skips the character offsets we do not need (docs/benchmarks.md: tokenize)
            encodings = tok.encode_batch_fast([d.text for d in batch], add_special_tokens=False)
            for doc, enc in zip(batch, encodings):
                num_bytes = utf8_size(doc.text)
                writers[route(doc)].add(enc.ids, num_bytes)
                bar.update(num_bytes)
        bar.close()
        manifests = {name: writer.finish() for name, writer in writers.items()}
        if check is not None:
            check(manifests)
    except BaseException:
        for writer in writers.values():
            writer.discard()
        raise
    together = publication if publication is not None else Publication()  # every split, or none
    for name, writer in writers.items():
        writer.publish(manifests[name], together)
    if publication is None:
        together.publish()
    return manifests
