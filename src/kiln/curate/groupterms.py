"""Bias on the data side: how often the training text names each social group, for the data card.

Counts whole-word, case-insensitive mentions of a fixed English lexicon per axis and group (the axes
of the model-side probes in evaluate/bias.py), over the curated training split, so a skew (three
mentions of men for every one of women, say) is visible before any training. A count is a mention,
not a judgement of how the group is described; "white", "black", "old" and "young" also count
their other senses, which is why the card shows the lexicon with the figures.
"""

from __future__ import annotations

import numpy as np

from kiln.curate.wordbatch import HashSet, WordBatch
from kiln.curate.words import Words, analyze, ngram_hashes

GROUP_TERMS: dict[str, dict[str, tuple[str, ...]]] = {
    "gender": {
        "female": (
            "woman",
            "women",
            "girl",
            "girls",
            "she",
            "her",
            "hers",
            "mother",
            "mothers",
            "daughter",
            "daughters",
            "sister",
            "sisters",
            "wife",
            "wives",
        ),
        "male": (
            "man",
            "men",
            "boy",
            "boys",
            "he",
            "him",
            "his",
            "father",
            "fathers",
            "son",
            "sons",
            "brother",
            "brothers",
            "husband",
            "husbands",
        ),
    },
    "race_ethnicity": {
        "black": ("black", "blacks", "african american", "african americans", "negro", "negroes"),
        "white": ("white", "whites", "caucasian", "caucasians"),
        "asian": ("asian", "asians", "asian american", "asian americans"),
        "hispanic": ("hispanic", "hispanics", "latino", "latinos", "latina", "latinas"),
        "native": ("native american", "native americans", "indian tribes", "american indian", "american indians"),
    },
    "religion": {
        "christian": ("christian", "christians", "christianity", "catholic", "catholics", "protestant", "protestants"),
        "muslim": ("muslim", "muslims", "islam", "islamic"),
        "jewish": ("jewish", "jew", "jews", "judaism"),
        "hindu": ("hindu", "hindus", "hinduism"),
        "buddhist": ("buddhist", "buddhists", "buddhism"),
        "atheist": ("atheist", "atheists", "atheism"),
    },
    "nationality": {
        "american": ("american", "americans"),
        "mexican": ("mexican", "mexicans"),
        "chinese": ("chinese",),
        "russian": ("russian", "russians"),
        "german": ("german", "germans"),
        "french": ("french",),
        "british": ("british", "briton", "britons"),
        "japanese": ("japanese",),
        "middle_eastern": ("iraqi", "iraqis", "iranian", "iranians", "afghan", "afghans", "syrian", "syrians"),
    },
    "age": {
        "young": ("young", "youth", "teenager", "teenagers", "child", "children", "kids"),
        "old": ("old", "elderly", "aged", "senior", "seniors", "retired", "retirees"),
    },
    "disability": {
        "disability": (
            "disabled",
            "disability",
            "disabilities",
            "handicapped",
            "blind",
            "deaf",
            "wheelchair",
            "autistic",
            "crippled",
            "mentally ill",
        ),
    },
}
"""axis -> group -> lexicon (lower case; the words of a multi-word term may be separated by any
non-word characters)."""


class GroupTermCounter:
    """Mentions per (axis, group) over the documents passed to `add`, and the words seen.

    Terms are matched on the folded word hashes of `kiln.curate.words` (lower case; any run of
    characters that are not letters or digits separates words, so "African-American" is the two-word
    term), which the curation workers compute anyway: `mentions` is a few numpy lookups per
    document. Longer terms win and matches do not overlap, as in a longest-first regex scan: "African
    American" counts once, for its group, and not again as "American"."""

    def __init__(self) -> None:
        self.groups: list[tuple[str, str]] = [(a, g) for a, groups in GROUP_TERMS.items() for g in groups]
        by_length: dict[int, list[tuple[int, int]]] = {}
        for i, (axis, group) in enumerate(self.groups):
            for term in GROUP_TERMS[axis][group]:
                words = analyze(term).hashes
                by_length.setdefault(len(words), []).append((int(ngram_hashes(words, len(words))[0]), i))
        self.lexicon: list[tuple[int, HashSet, np.ndarray]] = []
        """(words per term, the terms' hashes, group index of each), longest terms first."""
        for n in sorted(by_length, reverse=True):
            pairs = sorted(by_length[n])
            hashes = np.array([h for h, _ in pairs], dtype=np.uint64)
            self.lexicon.append((n, HashSet(hashes), np.array([g for _, g in pairs], dtype=np.int64)))
        self.counts = np.zeros(len(self.groups), dtype=np.int64)
        self.words = 0

    def mentions(self, words: Words) -> np.ndarray:
        """Mentions per group (in `self.groups` order) in one document's words."""
        return self.mentions_many([words])[0]

    def mentions_many(self, words: list[Words]) -> np.ndarray:
        """`mentions` of each document of a batch, one row each, in whole-batch passes."""
        batch = WordBatch(words)
        out = np.zeros((len(words), len(self.groups)), dtype=np.int64)
        covered = np.zeros(len(batch.hashes), dtype=bool)
        found: list[tuple[int, int, int]] = []  # (position, words, group) of every match, longest terms first
        for n, terms, group in self.lexicon:
            pos, grams = batch.grams(n)
            where, at = terms.find(grams)
            found += [(p, n, group[t]) for p, t in zip(pos[where].tolist(), at.tolist())]
        for p, n, g in found:  # per length longest first, each left to right: no overlaps
            if not covered[p : p + n].any():
                covered[p : p + n] = True
                out[batch.doc[p], g] += 1
        return out

    def add_mentions(self, mentions: np.ndarray, num_words: int) -> None:
        """Add one document's `mentions` and its word count."""
        self.counts += mentions
        self.words += num_words

    def add(self, text: str) -> None:
        words = analyze(text)
        self.add_mentions(self.mentions(words), len(words))

    def as_dict(self) -> dict:
        """{"words": N, "axes": {axis: {group: mentions}}}, every group listed (0 when unseen)."""
        counts = dict(zip(self.groups, self.counts.tolist()))
        return {
            "words": self.words,
            "axes": {axis: {group: counts[(axis, group)] for group in groups} for axis, groups in GROUP_TERMS.items()},
        }
