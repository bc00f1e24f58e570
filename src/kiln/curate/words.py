"""The word view of a document that the quality, decontamination and dedup rules share, in numpy.

A document is folded once (lower case; every run of characters that are not letters or digits
becomes one space) and each word gets a stable 64-bit hash, computed for all words at once with a
polynomial rolling hash over the UTF-8 bytes and a splitmix64 finaliser. The hashes do not depend
on the process (unlike Python's `hash`), so worker processes agree, and word n-grams are hashed by
combining consecutive word hashes. Folding ASCII text is a byte-table lookup; other text goes
through one regular expression.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from kiln.corpus import Document

_FOLD = re.compile(r"[\W_]+")
_ASCII_TABLE = bytes(b if (48 <= b <= 57 or 97 <= b <= 122) else (b + 32 if 65 <= b <= 90 else 32) for b in range(256))
_P = np.uint64(0x100000001B3)  # odd, so invertible modulo 2**64
_P_INV = np.uint64(pow(int(_P), -1, 2**64))
_MIX = np.uint64(0x9E3779B97F4A7C15)
_SPACE = 32


def fold(text: str) -> bytes:
    """Lower-cased UTF-8 bytes with every non-word run turned into one space (ASCII: single spaces
    may repeat, which splitting ignores)."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_TABLE)
    return _FOLD.sub(" ", text.lower()).encode("utf-8", errors="surrogatepass")


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@dataclass
class Words:
    """Per word: a stable hash, its length in bytes, and whether it holds anything but digits."""

    hashes: np.ndarray
    lengths: np.ndarray
    has_letter: np.ndarray
    _grams: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.hashes)

    def grams(self, n: int) -> np.ndarray:
        """`ngram_hashes(self.hashes, n)`, kept: made from the longest shorter n-grams already kept
        (one multiply-add per extra word), so the quality, decontamination, dedup and group-term rules
        share the work. Only the n asked for is kept, not the steps between."""
        if n <= 1:
            return self.hashes[: max(len(self.hashes) - n + 1, 0)]
        return kept_grams(self.hashes, self._grams, n)


_POWERS: list[np.ndarray] = []
"""P^(j+1) and P^-(j+1) modulo 2^64 for j below the longest text folded so far (at most
`_POWERS_KEPT`): constants, kept so each pass of `analyze_many` does not recompute two sequential
cumulative products (a quarter of its time)."""
_POWERS_KEPT = 1 << 20


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` entries of both power tables (computed afresh past `_POWERS_KEPT`)."""
    if n > _POWERS_KEPT:
        return _power_tables(n)
    if not _POWERS or len(_POWERS[0]) < n:  # grown by doubling, from 128K entries
        _POWERS[:] = _power_tables(min(max(n, 2 * len(_POWERS[0]) if _POWERS else 1 << 17), _POWERS_KEPT))
    return _POWERS[0][:n], _POWERS[1][:n]


def _power_tables(size: int) -> tuple[np.ndarray, np.ndarray]:
    with np.errstate(over="ignore"):
        return np.cumprod(np.full(size, _P, dtype=np.uint64)), np.cumprod(np.full(size, _P_INV, dtype=np.uint64))


def _analyze_bytes(arr: np.ndarray) -> tuple[Words, np.ndarray]:
    """The words of folded bytes, and the byte offset where each starts."""
    is_word = arr != _SPACE
    edges = np.diff(np.concatenate(([0], is_word.view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    if len(starts) == 0:
        empty = np.zeros(0, dtype=np.uint64)
        return Words(empty, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)), starts
    powers, inverse = _powers(len(arr))
    with np.errstate(over="ignore"):
        # sum of (b_j + 1) * P^(j - start) over each word: differences of one running sum (the
        # spaces between words never enter; no mask multiply, no reduceat)
        total = np.cumsum((arr.astype(np.uint64) + np.uint64(1)) * powers)
        raw = (total[ends - 1] - np.where(starts > 0, total[starts - 1], np.uint64(0))) * inverse[starts]
        hashes = _splitmix(raw)
    letters = np.cumsum(is_word & ((arr < 48) | (arr > 57)), dtype=np.int32)  # running count of letters
    has_letter = letters[ends - 1] > np.where(starts > 0, letters[starts - 1], 0)
    return Words(hashes, ends - starts, has_letter), starts


def analyze(text: str) -> Words:
    """Fold `text` and hash every word (vectorised; no Python loop over words)."""
    return _analyze_bytes(np.frombuffer(fold(text), dtype=np.uint8))[0]


def analyze_many(texts: list[str], chunk_bytes: int = 1 << 16) -> list[Words]:
    """`analyze` of each text, in vectorised passes over about `chunk_bytes` of text at a time
    (numpy's per-call cost dominates a short document; much larger passes spill out of the CPU's
    caches). A word's hash does not depend on where it sits, so the results equal `analyze`'s."""
    out: list[Words] = []
    i = 0
    while i < len(texts):
        folded: list[bytes] = []
        size = 0
        while i < len(texts) and (not folded or size < chunk_bytes):
            folded.append(fold(texts[i]))
            size += len(folded[-1]) + 1
            i += 1
        whole, starts = _analyze_bytes(np.frombuffer(b" ".join(folded), dtype=np.uint8))
        ends = np.cumsum([len(f) + 1 for f in folded]) - 1  # where each text ends in the joined bytes
        cuts = [0, *np.searchsorted(starts, ends).tolist()]
        out += [Words(whole.hashes[a:b], whole.lengths[a:b], whole.has_letter[a:b]) for a, b in zip(cuts, cuts[1:])]
    return out


def cache_words(docs: list[Document]) -> None:
    """Put the word view of every document whose text has none yet in its cache, in one pass."""
    todo = [d for d in docs if (c := d.cache.get("words")) is None or c[0] is not d.text]
    for doc, words in zip(todo, analyze_many([d.text for d in todo])):
        doc.cache["words"] = (doc.text, words)


def words_of(doc: Document) -> Words:
    """`analyze(doc.text)`, cached on the document until its text changes."""
    cached = doc.cache.get("words")
    if cached is not None and cached[0] is doc.text:
        return cached[1]
    words = analyze(doc.text)
    doc.cache["words"] = (doc.text, words)
    return words


def longer_grams(hashes: np.ndarray, grams: np.ndarray, m: int, n: int) -> np.ndarray:
    """The `n`-gram hashes of `hashes` from its `m`-gram hashes `grams` (m < n): one multiply-add
    per extra word."""
    if len(hashes) - n + 1 <= 0:
        return np.zeros(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(m, n):  # (j+1)-grams from j-grams
            grams = grams[: len(hashes) - j] * _MIX + hashes[j:]
    return grams


def kept_grams(hashes: np.ndarray, kept: dict[int, np.ndarray], n: int) -> np.ndarray:
    """The `n`-gram hashes of `hashes` (n >= 2) from `kept` (n -> n-gram hashes), made from the longest
    shorter ones there when missing and kept in turn."""
    got = kept.get(n)
    if got is None:
        m = max((k for k in kept if k < n), default=1)
        got = longer_grams(hashes, hashes if m == 1 else kept[m], m, n)
        kept[n] = got
    return got


def ngram_hashes(hashes: np.ndarray, n: int) -> np.ndarray:
    """One hash per run of `n` consecutive words (empty if there are fewer than `n` words)."""
    return hashes[: len(hashes) - n + 1].copy() if n == 1 else longer_grams(hashes, hashes, 1, n)


def hashes_of(words: list[str]) -> np.ndarray:
    """The hash of each given word (as `analyze` would hash it inside a document)."""
    return analyze(" ".join(words)).hashes
