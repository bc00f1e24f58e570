import random

from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

from kiln.curate.langid import load_identifier
from tests.conftest import make_text
from tests.curate.test_pipeline import FRENCH, GERMAN


def test_vectorised_scan_matches_py3langid_exactly():
    reference = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
    fast = load_identifier()
    rng = random.Random(0)
    texts = [make_text(rng, n) for n in range(1, 30)] + [
        FRENCH,
        GERMAN,
        "",
        "a",
        "ça va? très bien",
        "日本語のテキストです",
        "Привет, как дела?",
        "مرحبا بالعالم",
        "\x00\x01 bytes",
        "Ελληνικά κείμενα",
    ]
    for text in texts:
        want, got = reference.classify(text), fast.classify(text)
        assert got[0] == want[0] and abs(got[1] - want[1]) < 1e-5, text
    assert fast.classify(FRENCH)[0] == "fr" and fast.classify(GERMAN)[0] == "de"
