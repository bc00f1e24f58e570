"""Exact and near-duplicate removal, keeping the first document of each cluster (in stream order).

Exact: blake2b of the text lower-cased with whitespace and punctuation folded.

Near: MinHash over word n-gram shingles with LSH banding (Broder 1997; the 5-gram, 14 bands x 8 rows
setting of the FineWeb/datatrove pipelines). Two documents whose shingle sets have Jaccard
similarity s share a band with probability 1 - (1 - s^rows)^bands: about 0.5 at s = 0.72, 0.96 at
s = 0.8 and under 0.01 at s = 0.5. Signatures are computed with numpy (one uint64 hash per word,
shingles combined polynomially, `num_hashes` affine permutations); the index keeps `bands` keys per
kept document, about 120 bytes each.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import numpy as np

_FOLD = re.compile(r"[\W_]+")
_MERSENNE = np.uint64((1 << 61) - 1)


@dataclass
class DedupConfig:
    exact: bool = True
    """Drop documents whose folded text (lower case, no punctuation) was seen before."""
    near: bool = True
    """Drop near-duplicates found with MinHash LSH."""
    shingle_words: int = 5
    """Words per shingle."""
    bands: int = 14
    """LSH bands."""
    rows: int = 8
    """MinHash values per band (bands * rows hashes in all)."""
    seed: int = 1
    """Seeds the hash permutations."""


def exact_key(text: str) -> bytes:
    return hashlib.blake2b(_FOLD.sub(" ", text.lower()).strip().encode(), digest_size=16).digest()


def _word_hash(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=8).digest(), "little")


class MinHasher:
    """MinHash signatures of word shingles: (bands * rows,) uint64 per document."""

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        n = cfg.bands * cfg.rows
        self.a = rng.integers(1, 2**61 - 1, size=n, dtype=np.uint64) | np.uint64(1)
        self.b = rng.integers(0, 2**61 - 1, size=n, dtype=np.uint64)
        self.mix = np.uint64(0x9E3779B97F4A7C15)
        self._word_cache: dict[str, int] = {}  # words repeat across documents: hash each once

    def _word_hashes(self, words: list[str]) -> np.ndarray:
        cache = self._word_cache
        if len(cache) > 2_000_000:  # bound memory on huge vocabularies
            cache.clear()
        return np.fromiter((cache[w] if w in cache else cache.setdefault(w, _word_hash(w)) for w in words),
                           dtype=np.uint64, count=len(words))

    def signature(self, text: str) -> np.ndarray:
        words = _FOLD.sub(" ", text.lower()).split()
        n = self.cfg.shingle_words
        hashes = self._word_hashes(words) if words else np.zeros(1, dtype=np.uint64)
        if len(hashes) >= n:
            shingles = hashes[: len(hashes) - n + 1].copy()
            with np.errstate(over="ignore"):
                for j in range(1, n):  # polynomial combination of n consecutive word hashes (wrapping)
                    shingles = shingles * self.mix + hashes[j : len(hashes) - n + 1 + j]
        else:
            shingles = np.array([np.bitwise_xor.reduce(hashes)], dtype=np.uint64)
        shingles = np.unique(shingles)
        with np.errstate(over="ignore"):
            permuted = (shingles[:, None] * self.a[None, :] + self.b[None, :]) >> np.uint64(16)
        return permuted.min(axis=0)


class NearDuplicateIndex:
    """LSH buckets of kept documents; `check` returns the id of an earlier near-duplicate or None."""

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        self.buckets: list[dict[bytes, str]] = [{} for _ in range(cfg.bands)]

    def check_and_add(self, doc_id: str, signature: np.ndarray) -> str | None:
        keys = [signature[i * self.cfg.rows : (i + 1) * self.cfg.rows].tobytes() for i in range(self.cfg.bands)]
        for bucket, key in zip(self.buckets, keys):
            hit = bucket.get(key)
            if hit is not None:
                return hit
        for bucket, key in zip(self.buckets, keys):
            bucket[key] = doc_id
        return None
