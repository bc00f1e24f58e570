import random

from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

from kiln.corpus import Document
from kiln.curate.langid import load_identifier
from kiln.curate.steps import Language, StepStats
from tests.conftest import make_text
from tests.curate.test_pipeline import FRENCH, GERMAN


def _texts() -> list[str]:
    rng = random.Random(0)
    return [make_text(rng, n) for n in range(1, 30)] + [
        FRENCH,
        GERMAN,
        "",
        "a",
        "Le ",  # 2-5 bytes: shorter than the automaton's depth
        "abcd",
        "ça va? très bien",
        "日本語のテキストです",
        "Привет, как дела?",
        "مرحبا بالعالم",
        "\x00\x01 bytes",
        "Ελληνικά κείμενα",
        "SHOUTING IN CAPITALS",
    ]


def test_vectorised_scan_matches_py3langid_exactly():
    reference = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
    fast = load_identifier()
    for text in _texts():
        want, got = reference.classify(text), fast.classify(text)
        assert got[0] == want[0] and abs(got[1] - want[1]) < 1e-5, text
    assert fast.classify(FRENCH)[0] == "fr" and fast.classify(GERMAN)[0] == "de"


def test_a_batch_is_classified_as_each_text_alone():
    """Joined texts never share a feature across a boundary: a French text after a German one, an
    empty text between, and batches cut at any size give py3langid's own labels and scores."""
    reference = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
    fast = load_identifier()
    texts = _texts()
    texts = texts + [GERMAN[-7:] + FRENCH[:5], "", FRENCH[:3]] + texts[::-1]
    want = [reference.classify(t) for t in texts]
    for chunk in (1, 40, 1 << 16):
        got = fast.classify_many(texts, chunk_bytes=chunk)
        assert [g[0] for g in got] == [w[0] for w in want]
        assert max(abs(g[1] - w[1]) for g, w in zip(got, want)) < 1e-5
    assert fast.classify_many([]) == []


def test_the_language_step_labels_a_batch_as_one_document_at_a_time():
    step = Language(keep=["en"], min_score=0.5)
    texts = _texts()[20:]
    one_by_one, stats_one = [], StepStats("language")
    for i, t in enumerate(texts):
        kept = step(Document(str(i), t, {}), stats_one)
        one_by_one.append(None if kept is None else kept.metadata)
    stats_batch = StepStats("language")
    batch = step.run([Document(str(i), t, {}) for i, t in enumerate(texts)], stats_batch)
    assert [d.metadata for d in batch] == [m for m in one_by_one if m is not None]
    assert stats_batch.as_dict() == stats_one.as_dict() and stats_one.dropped


def test_a_restricted_label_set_scores_only_those_languages():
    reference = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
    fast = load_identifier()
    for ident in (reference, fast):
        ident.set_languages(["en", "de", "fr"])
    texts = _texts()
    want = [reference.classify(t) for t in texts]
    for got in ([fast.classify(t) for t in texts], fast.classify_many(texts)):
        assert [g[0] for g in got] == [w[0] for w in want] and {g[0] for g in got} <= {"en", "de", "fr"}
        assert max(abs(g[1] - w[1]) for g, w in zip(got, want)) < 1e-5


def test_trie_depth_is_the_longest_shortest_path_when_states_share_rows():
    """Random automata laid out as py3langid's (a row of 256 successors per state, rows shared between
    states): the depth is a plain breadth-first search's over states."""
    import collections

    import numpy as np

    from kiln.curate.langid import _trie_depth

    rng = np.random.default_rng(3)
    for _ in range(20):
        states, rows = int(rng.integers(5, 60)), int(rng.integers(2, 30))
        table = rng.integers(0, states, size=(rows, 256))
        table[rng.random((rows, 256)) < 0.97] = 0  # sparse: most bytes go back to the root
        row_of = rng.integers(0, rows, size=states)
        depth, queue = {0: 0}, collections.deque([0])
        while queue:
            s = queue.popleft()
            for t in table[row_of[s]].tolist():
                if t not in depth:
                    depth[t] = depth[s] + 1
                    queue.append(t)
        assert _trie_depth(table.ravel(), row_of << 8) == max(depth.values())
