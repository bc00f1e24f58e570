"""Exact and near-duplicate removal, keeping the first document of each cluster (in stream order).

Exact: blake2b of the document's folded word hashes (`kiln.curate.words`): case, punctuation and
spacing are ignored.

Near: MinHash over word n-gram shingles with LSH banding (Broder 1997; the 5-gram, 14 bands x 8 rows
setting of the FineWeb/datatrove pipelines). Two documents whose shingle sets have Jaccard
similarity s share a band with probability 1 - (1 - s^rows)^bands: about 0.5 at s = 0.68, 0.92 at
s = 0.8, 0.05 at s = 0.5 and under 0.01 at s = 0.4. Signatures are computed with numpy (the stable word hashes of
`kiln.curate.words`, shingles combined polynomially, bands * rows affine permutations of 32-bit
values); the index keeps `bands` keys of 32 bytes per kept document (~100 bytes each in its dict).
"""

from __future__ import annotations

import hashlib

import numpy as np

from kiln.curate.config import DedupConfig
from kiln.curate.words import Words, analyze


def exact_key(words: Words) -> bytes:
    """Equal for documents with the same folded words (case, punctuation and spacing ignored)."""
    return hashlib.blake2b(words.hashes.tobytes(), digest_size=16).digest()


_PERMUTATION_BLOCK = 8
"""Permutations per pass over a batch's shingles: 8 x 60,000 values stay in the CPU's caches (a pass
with all 112 ran 2.4x slower on a 2-core EPYC)."""
_GROUP_SHINGLES = 1 << 18
"""Shingles hashed together at most (unless one document has more): 8 MB of permuted values."""


class MinHasher:
    """MinHash signatures of word shingles: (bands * rows,) uint32 per document.

    Each permutation is x -> a * x + b modulo 2**32 (a odd: a bijection) on the shingle hash folded
    to 32 bits. 32-bit products are one vector instruction on every x86 and ARM CPU (numpy's 64-bit
    multiply has none without AVX-512) and move half the bytes. Two of a document's n shingles fold
    to one value with odds about n^2 / 2^33 (0.2 % at n = 4,000), which merges two of n set members:
    the Jaccard similarity moves by about 1 / n. Affine permutations are not min-wise independent on
    structured sets (on runs of consecutive integers they under-estimate the similarity by 0.07-0.09,
    the 64-bit ones before them alike); shingle hashes are uniformly random, where they are unbiased
    (tests/curate/test_pipeline.py)."""

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        rng = np.random.default_rng(cfg.seed)
        n = cfg.bands * cfg.rows
        self.a = rng.integers(0, 2**32, size=n, dtype=np.uint32) | np.uint32(1)
        self.b = rng.integers(0, 2**32, size=n, dtype=np.uint32)

    def shingles(self, words: Words) -> np.ndarray:
        """The document's shingle hashes; shorter than one shingle, the whole (possibly empty) text is one."""
        shingles = words.grams(self.cfg.shingle_words)
        if len(shingles) == 0:
            shingles = np.array([np.bitwise_xor.reduce(words.hashes) if len(words) else 0], dtype=np.uint64)
        return shingles

    def signature(self, words: Words | str) -> np.ndarray:
        return self.signatures([analyze(words) if isinstance(words, str) else words])[0]

    def signatures(self, words: list[Words]) -> np.ndarray:
        """`signature` of each document, one row each, for a batch in a few whole-batch passes: a
        document's few hundred shingles cost less than numpy's per-call overhead (2.6x faster for 64
        documents than one call each, on a 2-core EPYC)."""
        out = np.empty((len(words), len(self.a)), dtype=np.uint32)
        sets = [self.shingles(w) for w in words]
        first = 0
        while first < len(sets):  # groups of at most _GROUP_SHINGLES (or one document): bounded scratch
            last, size = first + 1, len(sets[first])
            while last < len(sets) and size + len(sets[last]) <= _GROUP_SHINGLES:
                size += len(sets[last])
                last += 1
            group = sets[first:last]
            starts = np.cumsum([0] + [len(s) for s in group[:-1]])
            self.minhash(np.concatenate(group), starts, out[first:last])
            first = last
        return out

    def minhash(self, items: np.ndarray, starts: np.ndarray, out: np.ndarray) -> None:
        """out[d] = the minimum of each permutation over items[starts[d]:starts[d + 1]] (64-bit items,
        repeats allowed; every set non-empty)."""
        folded = (items ^ (items >> np.uint64(32))).astype(np.uint32)
        # no np.unique: a repeated item cannot change a minimum
        for i in range(0, len(self.a), _PERMUTATION_BLOCK):
            block = slice(i, i + _PERMUTATION_BLOCK)
            permuted = np.multiply.outer(self.a[block], folded)  # one row per permutation
            permuted += self.b[block, None]
            out[:, block] = np.minimum.reduceat(permuted, starts, axis=1).T


class NearDuplicateIndex:
    """LSH buckets of kept documents; `check` returns the id of an earlier near-duplicate or None."""

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        self.buckets: list[dict[bytes, str]] = [{} for _ in range(cfg.bands)]

    def check_and_add(self, doc_id: str, signature: np.ndarray) -> str | None:
        raw, width = signature.tobytes(), signature.itemsize * self.cfg.rows  # slicing bytes: no array per band
        keys = [raw[i * width : (i + 1) * width] for i in range(self.cfg.bands)]
        for bucket, key in zip(self.buckets, keys):
            hit = bucket.get(key)
            if hit is not None:
                return hit
        for bucket, key in zip(self.buckets, keys):
            bucket[key] = doc_id
        return None
