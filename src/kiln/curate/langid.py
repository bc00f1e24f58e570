"""Offline language identification: py3langid's model (shipped in its wheel) with a vectorised scan.

py3langid finds its byte n-gram features with an Aho-Corasick automaton walked one byte at a time
in Python, about 1 MB/s. The automaton's trie is at most `depth` (6) bytes deep, so its state
after byte i depends only on bytes i-5..i: kiln runs those `depth` transitions for every position
at once as numpy gathers (tens of MB/s), then scores the feature counts exactly as py3langid does.
`test_langid` checks the labels and scores equal py3langid's own on many texts.
"""

from __future__ import annotations

import numpy as np


def _trie_depth(nextmove: np.ndarray, rowbase: np.ndarray) -> int:
    """Longest shortest path from the root: the deepest trie node (breadth-first, vectorised). py3langid
    starts each state's row of the transition table at row << 8, so a level's successors are whole
    rows of a (rows, 256) view (3x faster than gathering each index)."""
    depth = np.full(len(rowbase), -1, dtype=np.int64)
    depth[0] = 0
    frontier, d = np.array([0]), 0
    table = nextmove.reshape(-1, 256)
    while len(frontier):
        reached = np.zeros(len(rowbase), dtype=bool)
        reached[table[rowbase[frontier] >> 8].ravel()] = True
        nxt = np.flatnonzero(reached & (depth < 0))
        d += 1
        depth[nxt] = d
        frontier = nxt
    return int(depth.max())


def load_identifier():
    """py3langid's LanguageIdentifier (probabilities normalised) with the vectorised feature scan."""
    from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

    class VectorisedIdentifier(LanguageIdentifier):
        def _prepare(self) -> None:
            code = self.tk_nextmove.typecode
            self._next = np.frombuffer(self.tk_nextmove, dtype=np.dtype(code))  # a view: no 40 MB copy
            self._rows = np.asarray(self._rowbase, dtype=np.int64)
            self._out = np.asarray(self.tk_output, dtype=np.int64)
            self._depth = _trie_depth(self._next, self._rows)
            self._ptc = np.asarray(self.nb_ptc, dtype=np.float32)  # float16 products have no BLAS

        def _raw_score(self, text: bytes) -> np.ndarray:
            data = np.frombuffer(text, dtype=np.uint8).astype(np.int64)
            n = len(data)
            state = np.zeros(n, dtype=self._next.dtype)
            for k in range(self._depth - 1, -1, -1):  # byte i-k, oldest first
                step = self._next[self._rows[state[k:]] + data[: n - k]]
                state[k:] = step
            features = self._out[state]
            features = features[features >= 0]
            if len(features) == 0:
                return super()._raw_score(b"")
            idx, counts = np.unique(features, return_counts=True)
            return np.log1p(counts.astype(np.float32)) @ self._ptc[idx] + self.nb_pc

    ident = VectorisedIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
    ident._prepare()
    return ident
