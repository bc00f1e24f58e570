"""The data card's group-term counter: whole words, longest term first, no overlaps."""

import random
import re
from collections import Counter

from kiln.curate.groupterms import GROUP_TERMS, GroupTermCounter


def _regex_counts(text: str) -> Counter:
    """The plain definition: a longest-first, case-insensitive, whole-word regex scan."""
    group_of = {t: (a, g) for a, groups in GROUP_TERMS.items() for g, terms in groups.items() for t in terms}
    alternation = "|".join(r"\s+".join(map(re.escape, t.split())) for t in sorted(group_of, key=len, reverse=True))
    pattern = re.compile(rf"\b(?:{alternation})\b", re.IGNORECASE)
    return Counter(group_of[" ".join(m.group().lower().split())] for m in pattern.finditer(text))


def test_mentions_equal_a_longest_first_regex_scan_on_spaced_text():
    rng = random.Random(0)
    terms = [t for groups in GROUP_TERMS.values() for ts in groups.values() for t in ts]
    filler = "the a of senator spoke plainly American Indian native tribes African".split()
    for _ in range(200):
        words = [rng.choice(terms + filler) for _ in range(rng.randint(1, 40))]
        text = " ".join(w.upper() if rng.random() < 0.2 else w for w in words)
        counter = GroupTermCounter()
        counter.add(text)
        got = Counter({k: v for k, v in zip(counter.groups, counter.counts.tolist()) if v})
        assert got == _regex_counts(text), text


def test_a_two_word_term_counts_once_for_its_group_and_punctuation_separates_words():
    counter = GroupTermCounter()
    counter.add("An African-American and a Native American; AMERICAN INDIAN tribes, old women.")
    axes = counter.as_dict()["axes"]
    assert axes["race_ethnicity"]["black"] == 1  # not also "american"
    assert axes["race_ethnicity"]["native"] == 2  # "native american" then "american indian": no overlap
    assert axes["nationality"]["american"] == 0
    assert axes["age"]["old"] == 1 and axes["gender"]["female"] == 1
    assert counter.words == 12


def test_a_batch_counts_each_document_as_alone_and_no_term_spans_two():
    from kiln.curate.words import analyze

    rng = random.Random(1)
    terms = [t for groups in GROUP_TERMS.values() for ts in groups.values() for t in ts]
    texts = [" ".join(rng.choice(terms + ["plain", "words"]) for _ in range(rng.randint(0, 12))) for _ in range(90)]
    texts[10], texts[11] = "they said african", "american voters"  # a term only across the boundary
    words = [analyze(t) for t in texts]
    counter = GroupTermCounter()
    alone = [counter.mentions(w).tolist() for w in words]
    assert counter.mentions_many(words).tolist() == alone
    assert sum(alone[10]) == 0 and sum(alone[11]) == 1  # "american" only: not "african american"
