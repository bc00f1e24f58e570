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


def test_a_document_without_words_fails_on_its_word_length_even_without_a_minimum():
    assert check_quality("", QualityConfig(min_words=0)) == "gopher:mean_word_length"
    assert check_quality("... !!!", QualityConfig(min_words=0)) == "gopher:mean_word_length"


def test_stop_words_late_in_a_long_document_still_count():
    rng = random.Random(3)
    words = [rng.choice(VOCAB[8:]) + rng.choice("abcdefgh") for _ in range(300)]
    cfg = QualityConfig(min_words=5)
    assert check_quality(" ".join(words) + ".", cfg) == "gopher:stop_words"
    assert check_quality(" ".join(words) + " the of.", cfg) != "gopher:stop_words"


def test_most_frequent_ngrams_tied_at_different_widths_go_by_the_least_hash():
    """Two 2-grams repeat equally often; only the wider covers more than the limit. kiln takes the
    tied n-gram with the least hash, so the verdict follows the hashes, and both outcomes occur."""
    cfg = QualityConfig()
    seen = set()
    for narrow, wide in [("aa bb", "ccccccc dddddddd"), ("ee ff", "ggggggg hhhhhhhh"), ("ii jj", "kkkkkkk llllllll")]:
        for first, second in [(narrow, wide), (wide, narrow)]:
            text = " ".join(f"{first} x{i}q {second} y{i}q" for i in range(5))
            least = min((narrow, wide), key=lambda g: int(analyze(g).grams(2)[0]))
            expected = "top_2gram" if least == wide else None
            assert ngram_reasons(WordBatch([analyze(text)]), cfg)[0] == expected, text
            seen.add(expected)
    assert seen == {"top_2gram", None}


def test_eval_ngrams_are_the_distinct_ngrams_of_the_evaluation_texts():
    from kiln.curate.steps import eval_ngrams

    texts = _texts(4, 2500)  # more than one pass of 1,000 texts
    expected = sorted({int(g) for t in texts for g in analyze(t).grams(5)})
    assert eval_ngrams(iter(texts), 5).tolist() == expected


def test_decontaminating_a_batch_equals_one_document_at_a_time():
    from kiln.corpus import CorpusConfig
    from kiln.curate.steps import StepStats

    rng = random.Random(5)
    evaluation = [" ".join(rng.choice(VOCAB) for _ in range(60)) for _ in range(4)]
    n = 5
    grams = np.unique(np.concatenate([analyze(t).grams(n) for t in evaluation]))
    texts = []
    for i in range(150):
        words = [rng.choice(VOCAB) for _ in range(30)]
        source = rng.choice(evaluation).split()
        at = rng.randrange(len(source) - 10)
        copied = {0: source, 1: source[at : at + 6]}.get(i % 4, [])  # all of it (dropped), 2 n-grams (flagged)
        texts.append(" ".join(words[:10] + copied + words[10:]))
    split = CorpusConfig(val_fraction=0.2)
    step = Decontaminate(grams, n, min_shared=3, skip_split=split)
    together, one = StepStats("d"), StepStats("d")
    kept = step.run([Document(id=f"d{i}", text=t) for i, t in enumerate(texts)], together)
    alone = [step(Document(id=f"d{i}", text=t), one) for i, t in enumerate(texts)]
    assert [(d.id, d.metadata) for d in kept] == [(d.id, d.metadata) for d in alone if d is not None]
    assert together.dropped == one.dropped and together.dropped["eval_overlap"] > 10
    assert sum(1 for d in alone if d is not None and "eval_overlap_ngrams" in d.metadata) > 10


def test_the_evaluation_bitmap_keeps_every_evaluation_gram_and_rules_out_most_others():
    rng = np.random.default_rng(6)
    for size in (0, 1, 1000, 200_000):
        grams = np.unique(rng.integers(0, 2**64, size=size, dtype=np.uint64))
        step = Decontaminate(grams, 13)
        assert step.grams.maybe(grams).all()
        others = rng.integers(0, 2**64, size=100_000, dtype=np.uint64)
        assert step.grams.maybe(others).mean() < 0.05


def test_finding_values_in_sorted_hashes_agrees_with_isin():
    from kiln.curate.wordbatch import HashSet, find_sorted

    rng = np.random.default_rng(7)
    members = np.unique(rng.integers(0, 2**64, size=500, dtype=np.uint64))
    values = np.concatenate([rng.choice(members, 300), rng.integers(0, 2**64, size=300, dtype=np.uint64)])
    want = np.flatnonzero(np.isin(values, members))
    for where, index in (find_sorted(members, values), HashSet(members).find(values)):
        assert where.tolist() == want.tolist() and (members[index] == values[where]).all()
    empty = np.zeros(0, dtype=np.uint64)
    assert len(find_sorted(empty, values)[0]) == 0 and len(HashSet(empty).find(values)[0]) == 0
