"""Offline language identification: py3langid's model (shipped in its wheel) with a vectorised scan.

py3langid finds its byte n-gram features with an Aho-Corasick automaton walked one byte at a time
in Python, about 1 MB/s. The automaton's trie is at most `depth` (6) bytes deep, so its state
after byte i depends only on bytes i-5..i: kiln runs those `depth` transitions for every position
at once as numpy gathers (tens of MB/s), then scores the feature counts as py3langid does (summed in
another order: the same to float rounding). `classify_many` does the same for a batch of texts in
one pass over their joined bytes (a text's positions never look back past its own first byte),
since numpy's per-call cost dominates a short text. `test_langid` checks the labels equal
py3langid's own and the scores agree within 1e-5 on many texts.
"""

from __future__ import annotations

import numpy as np


def _trie_depth(nextmove: np.ndarray, rowbase: np.ndarray) -> int:
    """Longest shortest path from the root: the deepest trie node (breadth-first, vectorised). py3langid
    starts each state's row of the transition table at row << 8 and shares rows between states: a
    level expands each row not expanded before once (states with one row have the same successors),
    as whole rows of a (rows, 256) view. 0.04 s against 0.14-0.22 s for every state's row."""
    table = nextmove.reshape(-1, 256)
    row_of = rowbase >> 8
    depth = np.full(len(rowbase), -1, dtype=np.int64)
    depth[0] = 0
    frontier, d = np.array([0]), 0
    expanded = np.zeros(len(table), dtype=bool)
    while len(frontier):
        rows = np.zeros(len(table), dtype=bool)
        rows[row_of[frontier]] = True
        rows &= ~expanded  # an expanded row's successors all have a depth already
        expanded |= rows
        reached = np.zeros(len(rowbase), dtype=bool)
        reached[table[np.flatnonzero(rows)].ravel()] = True
        nxt = np.flatnonzero(reached & (depth < 0))
        d += 1
        depth[nxt] = d
        frontier = nxt
    return int(depth.max())


def load_identifier():
    """py3langid's LanguageIdentifier (probabilities normalised) with the vectorised feature scan."""
    from py3langid.langid import MODEL_DIR, MODEL_FILE, RAW_FLOOR, LanguageIdentifier

    class VectorisedIdentifier(LanguageIdentifier):
        def _prepare(self) -> None:
            code = self.tk_nextmove.typecode
            self._next = np.frombuffer(self.tk_nextmove, dtype=np.dtype(code))  # a view: no 40 MB copy
            self._rows = np.asarray(self._rowbase, dtype=np.int64)
            self._out = np.asarray(self.tk_output, dtype=np.int64)
            self._depth = _trie_depth(self._next, self._rows)
            self._ptc = np.asarray(self.nb_ptc, dtype=np.float32)  # float16 products have no BLAS

        def _features(self, data: np.ndarray, offset: np.ndarray) -> np.ndarray:
            """The feature id after each byte (-1: none) of several texts' joined bytes, each position's
            automaton started at most `depth` bytes back and never before its own text's first byte
            (`offset`: each position's place within its text)."""
            n = len(data)
            state = np.zeros(n, dtype=self._next.dtype)
            young = np.flatnonzero(offset < self._depth)  # the few positions within depth of their text's start
            for k in range(min(self._depth, n) - 1, -1, -1):  # byte i-k, oldest first (a text of 2-5 bytes too)
                state[k:] = self._next[self._rows[state[k:]] + data[: n - k]]
                # positions whose byte i-k lies before their own text restart from the root (those
                # before k are not stepped here and still hold the root, 0: setting them is harmless)
                state[young[offset[young] < k]] = 0
            return self._out[state]

        def _raw_score(self, text: bytes) -> np.ndarray:
            return self._raw_scores([text], np.array([len(text)]))[0]

        def classify_many(self, texts: list[str], chunk_bytes: int = 1 << 16) -> list[tuple[str, float]]:
            """`classify(t)` for each text, in vectorised passes over about `chunk_bytes` at a time."""
            out: list[tuple[str, float]] = []
            batch, size = [], 0
            for text in texts:
                batch.append(self._encode(text))
                size += len(batch[-1])
                if size >= chunk_bytes:
                    out += self._classify_encoded(batch)
                    batch, size = [], 0
            return out + (self._classify_encoded(batch) if batch else [])

        def _classify_encoded(self, encoded: list[bytes]) -> list[tuple[str, float]]:
            """py3langid's `classify` of each encoded text, over their joined bytes."""
            lengths = np.array([len(e) for e in encoded], dtype=np.int64)
            scores = self._decide_rows(self._raw_scores(encoded, lengths), lengths)
            best = scores.argmax(axis=1)
            labels = []
            for i, conf in zip(best.tolist(), scores[np.arange(len(best)), best].tolist()):
                low = self.min_confidence is not None and conf < self.min_confidence
                labels.append(("und" if low else self.nb_classes[i], conf))
            return labels

        def _raw_scores(self, encoded: list[bytes], lengths: np.ndarray) -> np.ndarray:
            """py3langid's `_raw_score` of each text, one row each."""
            starts = np.cumsum(lengths) - lengths
            data = np.frombuffer(b"".join(encoded), dtype=np.uint8).astype(np.int64)
            owner = np.repeat(np.arange(len(encoded)), lengths)
            features = self._features(data, np.arange(len(data)) - starts[owner])
            hit = features >= 0
            keys = owner[hit] * len(self._ptc) + features[hit]  # (text, feature), sorted by text
            pairs, counts = np.unique(keys, return_counts=True)
            text_of, feature = np.divmod(pairs, len(self._ptc))
            fill = 0.0 if self._norm_probs else RAW_FLOOR  # py3langid's score of a featureless text
            scores = np.full((len(encoded), self._ptc.shape[1]), fill, dtype=np.float32)
            first = np.flatnonzero(np.diff(text_of, prepend=-1))
            weight = np.log1p(counts.astype(np.float32))
            for a, b in zip(first.tolist(), [*first[1:].tolist(), len(pairs)]):  # a product per text, as py3langid's
                scores[text_of[a]] = weight[a:b] @ self._ptc[feature[a:b]]
            scores[text_of[first]] += self.nb_pc
            return scores

        def _decide_rows(self, scores: np.ndarray, lengths: np.ndarray) -> np.ndarray:
            """py3langid's `_decide` on each row: normalised to probabilities (temperature the square
            root of the text's length in bytes), aliased labels folded into one column."""
            if self._norm_probs:
                scores *= (1.0 / np.sqrt(np.maximum(lengths, 1)))[:, None].astype(np.float32)
                np.exp(scores - scores.max(axis=1, keepdims=True), out=scores)
                scores /= scores.sum(axis=1, keepdims=True)
            for i, j in self._alias_pairs:
                if self._norm_probs:
                    scores[:, i] += scores[:, j]
                    scores[:, j] = 0.0
                else:
                    scores[:, i] = np.maximum(scores[:, i], scores[:, j])
                    scores[:, j] = RAW_FLOOR
            return scores

        def set_languages(self, langs: list[str] | None = None) -> None:
            super().set_languages(langs)
            self._ptc = np.asarray(self.nb_ptc, dtype=np.float32)  # the kept columns

    ident = VectorisedIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
    ident._prepare()
    return ident
