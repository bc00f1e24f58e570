"""The quality and decontamination rules, vectorised over a batch of documents, against plain-Python
readings of the rules, and a document's verdict independent of the batch it arrives in."""

import random
from collections import Counter

import numpy as np

from kiln.curate.config import QualityConfig
from kiln.curate.quality import check_quality, ngram_reasons, quality_reasons
from kiln.curate.steps import Decontaminate
from kiln.curate.wordbatch import WordBatch
from kiln.curate.words import analyze, fold
from kiln.readers import Document

VOCAB = "the of and to be that have with alpha beta gamma delta epsilon zeta eta theta iota kappa".split()


def _texts(seed: int, count: int) -> list[str]:
    """Texts from prose-like to highly repetitive, 0-400 words, with lines and paragraphs."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        words = VOCAB[: rng.randint(1, len(VOCAB))]
        n = rng.choice([0, 1, 2, 4, 9, 30, 60, 120, 400])
        if rng.random() < 0.3:  # a phrase repeated: what the n-gram rules exist for
            phrase = [rng.choice(words) for _ in range(rng.randint(2, 12))]
            body = [rng.choice(words) for _ in range(n)]
            at = rng.randrange(len(body) + 1)
            body[at:at] = phrase * rng.randint(1, 8)
        else:
            body = [rng.choice(words) for _ in range(n)]
        text = ""
        for i, w in enumerate(body):
            text += w + rng.choice([" "] * 12 + [". ", "\n", "\n\n", ", "]) if i < len(body) - 1 else w + "."
        out.append(text)
    return out


def _reference(text: str, cfg: QualityConfig) -> str | None | bool:
    """Gopher's n-gram repetition rules read plainly (Counter, sets). False where the rules leave it
    open: most frequent n-grams tied at different widths, which kiln decides by their hashes."""
    words = fold(text).decode().split()
    width = [len(w) for w in words]
    total = max(sum(width), 1)
    for n, limit in zip((2, 3, 4), cfg.max_top_ngram_frac):
        grams = Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))
        if not grams:
            continue
        top = max(grams.values())
        shares = {top * sum(len(w) for w in g) / total for g, c in grams.items() if c == top} if top > 1 else {0}
        if len({s > limit for s in shares}) > 1:
            return False
        if max(shares) > limit:
            return f"top_{n}gram"
    for n, limit in zip(range(5, 11), cfg.max_dup_ngram_frac):
        seen, covered = set(), set()
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if gram in seen:
                covered.update(range(i, i + n))
            seen.add(gram)
        if sum(width[i] for i in covered) / total > limit:
            return f"dup_{n}gram"
    return None


def test_ngram_rules_match_a_plain_reading_of_gopher():
    cfg = QualityConfig()
    texts = _texts(0, 600)
    reasons = ngram_reasons(WordBatch([analyze(t) for t in texts]), cfg)
    expected = [_reference(t, cfg) for t in texts]
    assert sum(e is False for e in expected) < len(texts) // 10
    assert [r for r, e in zip(reasons, expected) if e is not False] == [e for e in expected if e is not False]
    fired = Counter(reasons)
    assert {"top_2gram", "top_3gram", "dup_5gram", None} <= set(fired), fired  # the test sees each kind


def test_a_documents_verdict_does_not_depend_on_its_batch():
    cfg = QualityConfig(min_words=5, min_sentences=1)
    texts = _texts(1, 400)
    alone = [check_quality(t, cfg) for t in texts]
    for size in (1, 7, 64, 400):
        together = []
        for i in range(0, len(texts), size):
            together += quality_reasons(texts[i : i + size], [analyze(t) for t in texts[i : i + size]], cfg)
        assert together == alone
    assert len(set(alone)) >= 5, Counter(alone)


def test_decontamination_counts_each_shared_ngram_once_per_document():
    rng = random.Random(2)
    evaluation = [" ".join(rng.choice(VOCAB) for _ in range(40)) for _ in range(5)]
    n = 6
    eval_words = [fold(t).decode().split() for t in evaluation]
    eval_grams = {tuple(w[i : i + n]) for w in eval_words for i in range(len(w) - n + 1)}
    hashes = np.unique(np.concatenate([analyze(t).grams(n) for t in evaluation]))
    step = Decontaminate(hashes, n)
    docs = []
    for i in range(120):
        words = [rng.choice(VOCAB) for _ in range(rng.randint(0, 60))]
        if i % 3 == 0:  # a copied stretch, sometimes twice
            source = rng.choice(eval_words)
            at = rng.randrange(len(source) - n)
            words[rng.randrange(len(words) + 1) : 0] = source[at : at + rng.randint(n, 2 * n)] * rng.randint(1, 2)
        docs.append(Document(id=str(i), text=" ".join(words)))
    expected = []
    for doc in docs:
        w = fold(doc.text).decode().split()
        expected.append(len({tuple(w[i : i + n]) for i in range(len(w) - n + 1)} & eval_grams))
    assert step.shared(docs) == expected
    assert [step.shared([d])[0] for d in docs] == expected
    assert sum(e > 0 for e in expected) >= 30
