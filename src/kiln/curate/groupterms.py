"""Bias on the data side: how often the training text names each social group, for the data card.

Counts whole-word, case-insensitive mentions of a fixed English lexicon per axis and group (the axes
of the model-side probes in evaluate/bias.py), over the curated training split, so a skew (three
mentions of men for every one of women, say) is visible before any training. A count is a mention,
not a judgement of how the group is described; "white", "black", "old" and "young" also count
their other senses, which is why the card shows the lexicon with the figures.
"""

from __future__ import annotations

import re
from collections import Counter

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
"""axis -> group -> lexicon (lower case; multi-word terms match with any white space between)."""


class GroupTermCounter:
    """Mentions per (axis, group) over the documents passed to `add`, and the words seen."""

    def __init__(self) -> None:
        self.group_of: dict[str, tuple[str, str]] = {}
        for axis, groups in GROUP_TERMS.items():
            for group, terms in groups.items():
                for term in terms:
                    self.group_of[term] = (axis, group)
        alternation = "|".join(
            r"\s+".join(map(re.escape, t.split())) for t in sorted(self.group_of, key=len, reverse=True)
        )
        self.pattern = re.compile(rf"\b(?:{alternation})\b", re.IGNORECASE)
        self.counts: Counter[tuple[str, str]] = Counter()
        self.words = 0

    def add(self, text: str) -> None:
        for match in self.pattern.finditer(text):
            self.counts[self.group_of[" ".join(match.group().lower().split())]] += 1
        self.words += text.count(" ") + 1

    def as_dict(self) -> dict:
        """{"words": N, "axes": {axis: {group: mentions}}}, every group listed (0 when unseen)."""
        return {
            "words": self.words,
            "axes": {
                axis: {group: self.counts[(axis, group)] for group in groups} for axis, groups in GROUP_TERMS.items()
            },
        }
