"""The word views of a batch of documents as one array, for per-document n-gram statistics in a few
whole-batch numpy passes.

A document has a few hundred words, so a per-document numpy call costs more in overhead (a few
microseconds each) than in arithmetic; the quality rules make dozens of them. `WordBatch` lays the
batch's words end to end, with each word's document, and gives the n-grams that lie inside one
document as keys: the n-gram's hash with its low bits replaced by the document's index, so one
plain sort (SIMD, no argsort) groups equal n-grams of each document and every group says its
document. Two different n-grams of one document share a key only if their hashes agree in the
remaining bits (58 for the steps' 64 documents; odds about m^2 / 2^59 for m n-grams: 2e-12 at 1,000).
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from kiln.curate.words import Words, kept_grams

T = TypeVar("T")

CHUNK_DOCS = 64
"""Documents per `WordBatch` in the curation steps: enough that numpy's per-call cost is shared, few
enough that the passes stay in the CPU's caches (500 were slower than 64 on a 2-core EPYC)."""


class WordBatch:
    """Words of `len(words)` documents laid end to end: hash, length and document of each."""

    def __init__(self, words: list[Words]) -> None:
        self.num_docs = len(words)
        counts = np.array([len(w) for w in words], dtype=np.int64)
        self.offsets = np.concatenate(([0], np.cumsum(counts)))
        """Where each document's words start (and, last, where the batch ends)."""
        empty = np.zeros(0, dtype=np.uint64)
        self.hashes = np.concatenate([w.hashes for w in words]) if words else empty
        self.lengths = np.concatenate([w.lengths for w in words]).astype(np.int64) if words else empty.astype(np.int64)
        self.has_letter = np.concatenate([w.has_letter for w in words]) if words else np.zeros(0, dtype=bool)
        self.doc = np.repeat(np.arange(self.num_docs), counts)
        self.span = np.concatenate(([0], np.cumsum(self.lengths)))
        """span[j] - span[i]: the bytes of words i..j-1."""
        self.chars = self.span[self.offsets[1:]] - self.span[self.offsets[:-1]]
        """Each document's word bytes."""
        self._mask = np.uint64((1 << max(1, (self.num_docs - 1).bit_length())) - 1)
        self._grams: dict[int, np.ndarray] = {}

    def starts(self, n: int) -> np.ndarray:
        """Where every n-gram that lies inside one document starts, in text order."""
        if len(self.hashes) < n:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.doc[: len(self.hashes) - n + 1] == self.doc[n - 1 :])

    def gram_hashes(self, n: int) -> np.ndarray:
        """The hash of the n words at every position (across document ends too); `Words.grams(n)`'s
        within a document. Kept: longer n-grams start from the longest shorter ones."""
        return kept_grams(self.hashes, self._grams, n)

    def grams(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(start, hash) of every n-gram that lies inside one document, in text order."""
        pos = self.starts(n)
        return pos, self.gram_hashes(n)[pos]

    def share(self, words: list[Words]) -> None:
        """Hand each document's n-grams that the batch computed to its `Words`, as views (alive while the
        document's cache holds its words, one curation batch): dedup's shingles start from there."""
        for n, grams in self._grams.items():
            ends = np.maximum(self.offsets[1:] - n + 1, self.offsets[:-1]).tolist()
            for w, a, b in zip(words, self.offsets[:-1].tolist(), ends):
                w._grams.setdefault(n, grams[a:b])

    def keys(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(start position, key) of every n-gram inside one document, in text order."""
        pos, grams = self.grams(n)
        return pos, self.key_of(pos, grams)

    def key_of(self, pos: np.ndarray, grams: np.ndarray) -> np.ndarray:
        """The keys of the n-grams `grams` starting at `pos`."""
        return (grams & ~self._mask) | self.doc[pos].astype(np.uint64)

    def doc_of(self, keys: np.ndarray) -> np.ndarray:
        """The document of each key."""
        return (keys & self._mask).astype(np.int64)

    def widths(self, pos: np.ndarray, n: int) -> np.ndarray:
        """The bytes of the n words starting at each position."""
        return self.span[pos + n] - self.span[pos]

    def per_doc_max(self, doc: np.ndarray, values: np.ndarray) -> np.ndarray:
        """The largest value of each document (0 where it has none); values are non-negative."""
        out = np.zeros(self.num_docs, dtype=values.dtype)
        np.maximum.at(out, doc, values)
        return out


def chunks(items: list[T]) -> list[list[T]]:
    """`items` in consecutive runs of `CHUNK_DOCS`."""
    return [items[i : i + CHUNK_DOCS] for i in range(0, len(items), CHUNK_DOCS)]


def runs(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Runs of equal keys: (each distinct key, how often it occurs), in key order; by one sort (numpy
    2.4's `np.unique` hashes, 10-50x slower: 3.7 s against 0.07 s for 4M 64-bit values on a 2-core EPYC)."""
    ordered = np.sort(keys)
    starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1]))) if len(ordered) else np.zeros(0, int)
    return ordered[starts], np.diff(np.append(starts, len(keys)))


def distinct(values: np.ndarray) -> np.ndarray:
    """The sorted distinct values: `np.unique(values)` (`runs`' keys)."""
    return runs(values)[0]


def repeats(keys: np.ndarray) -> np.ndarray:
    """The indices of the keys that repeat an earlier key (the first of each key is the original)."""
    ordered = np.sort(keys)  # most text repeats nothing: a plain sort says so cheaply
    twice = ordered[1:][ordered[1:] == ordered[:-1]]
    if len(twice) == 0:
        return np.zeros(0, dtype=np.int64)
    candidates = find_sorted(distinct(twice), keys)[0]
    first = np.unique(keys[candidates], return_index=True)[1]  # first occurrence of each
    is_first = np.zeros(len(candidates), dtype=bool)
    is_first[first] = True
    return candidates[~is_first]


def find_sorted(members: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(where, index): the positions in `values` of those in the sorted array `members`, and each one's
    index there, by one binary search."""
    if len(members) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    at = np.minimum(np.searchsorted(members, values), len(members) - 1)
    where = np.flatnonzero(members[at] == values)
    return where, at[where]


class HashSet:
    """Sorted distinct 64-bit hashes, looked up many at a time: a packed bitmap of their top bits,
    about 32 bits a member (3 % set; at most 2^27 bits, 16 MB), rules out nearly every other value
    before the binary search (a bitmap 1 in 3 set left 2.8x the time on a 1.7M-gram set)."""

    def __init__(self, members: np.ndarray) -> None:
        self.members = members
        bits = min(max(int(len(members) * 32).bit_length(), 16), 27)
        self._shift = np.uint64(64 - bits)
        at = members >> self._shift
        self._bitmap = np.zeros(1 << (bits - 3), dtype=np.uint8)
        np.bitwise_or.at(self._bitmap, at >> np.uint64(3), np.left_shift(1, at & np.uint64(7)).astype(np.uint8))

    def __len__(self) -> int:
        return len(self.members)

    def maybe(self, values: np.ndarray) -> np.ndarray:
        """False for values that are surely not members; true for the rest."""
        at = values >> self._shift
        return (self._bitmap[at >> np.uint64(3)] >> (at & np.uint64(7)).astype(np.uint8)) & 1 == 1

    def find(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`find_sorted(self.members, values)`, the bitmap first."""
        candidates = np.flatnonzero(self.maybe(values))
        where, index = find_sorted(self.members, values[candidates])
        return candidates[where], index
