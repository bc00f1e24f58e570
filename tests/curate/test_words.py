import numpy as np

from kiln.curate.words import analyze, hashes_of, ngram_hashes


def test_words_fold_case_and_punctuation_and_hash_stably():
    a, b = analyze("Hello, World! 42 times"), analyze("hello world   42\ntimes.")
    assert np.array_equal(a.hashes, b.hashes) and len(a) == 4
    assert a.lengths.tolist() == [5, 5, 2, 5] and a.has_letter.tolist() == [True, True, False, True]
    assert np.array_equal(hashes_of(["hello"]), a.hashes[:1])
    # non-ASCII goes through the same folding: accents kept, punctuation splits
    c = analyze("Café — CAFÉ, naïve")
    assert c.hashes[0] == c.hashes[1] and len(c) == 3
    # fixed values: hashes must not change between processes or releases (dedup indexes rely on it)
    assert int(analyze("kiln").hashes[0]) == int(analyze("KILN!").hashes[0]) == 8081745442896201746
    assert len(analyze("")) == 0 and len(analyze(" ... ")) == 0


def test_ngram_hashes_see_order():
    h = analyze("a b c a b c").hashes
    grams = ngram_hashes(h, 3)
    assert len(grams) == 4 and grams[0] == grams[3] and len(set(grams.tolist())) == 3
    assert len(ngram_hashes(h, 7)) == 0


def test_kept_grams_equal_fresh_ones_in_any_order_of_asking():
    rng = np.random.default_rng(0)
    for length in (0, 1, 2, 5, 13, 14, 40):
        text = " ".join(f"w{rng.integers(0, 5)}" for _ in range(length))
        for order in (range(1, 16), (13, 5, 2, 14, 1, 3), (5, 13, 4, 2, 13)):
            words = analyze(text)
            for n in order:
                assert np.array_equal(words.grams(n), ngram_hashes(words.hashes, n)), (length, n)


def test_analyze_many_equals_analyze_text_by_text():
    from kiln.curate.words import analyze_many

    texts = ["", "...", "Hello, World! 42", "Café — CAFÉ, naïve", "a b c " * 50, "x"] * 7
    for chunk in (1, 64, 1 << 16):
        for one, many in zip([analyze(t) for t in texts], analyze_many(texts, chunk)):
            assert np.array_equal(one.hashes, many.hashes) and np.array_equal(one.lengths, many.lengths)
            assert np.array_equal(one.has_letter, many.has_letter)


def test_hashes_do_not_depend_on_the_kept_power_tables(monkeypatch):
    """The powers are kept between calls up to a size and computed afresh past it: a word hashes the
    same whether the tables were grown by a longer text before, are shorter, or are not kept at all."""
    from kiln.curate import words

    text = "Hello, World! " * 40
    want = analyze(text).hashes.copy()
    assert int(analyze("kiln").hashes[0]) == 8081745442896201746
    analyze("x " * 300_000)  # grows the tables
    assert np.array_equal(analyze(text).hashes, want)
    monkeypatch.setattr(words, "_POWERS", [])
    monkeypatch.setattr(words, "_POWERS_KEPT", 64)  # every text here is longer: computed afresh
    assert np.array_equal(analyze(text).hashes, want) and words._POWERS == []
    assert int(analyze("kiln").hashes[0]) == 8081745442896201746
