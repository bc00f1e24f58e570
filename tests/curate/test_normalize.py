"""Mojibake repair: ftfy is skipped only for texts it would return unchanged."""

import itertools
import random
import string

import ftfy
from ftfy.badness import BADNESS_RE, MOJIBAKE_CATEGORIES, is_bad

from kiln.curate.normalize import fix_mojibake, ftfy_config, mojibake_marks


def _alphabet() -> list[str]:
    """Every character ftfy's mojibake heuristic names (its categories, ranges expanded, and the
    letters of its expression), plus ASCII letters, digits, spaces and punctuation."""
    named = set()
    for chars in MOJIBAKE_CATEGORIES.values():
        for i, c in enumerate(chars):
            if c == "-" and 0 < i < len(chars) - 1:
                named.update(chr(o) for o in range(ord(chars[i - 1]), ord(chars[i + 1]) + 1))
            elif c != "-":
                named.add(c)
    named.update(c for c in BADNESS_RE.pattern if ord(c) > 127)
    return sorted(named) + list(string.ascii_letters + string.digits + " \n.,!?;:'\"()-")


def test_every_pair_that_ftfy_calls_mojibake_is_marked():
    chars = _alphabet()
    marks = mojibake_marks()
    for a, b in itertools.product(chars, repeat=2):
        if is_bad(a + b):
            assert marks.search(a + b), repr(a + b)


def test_texts_without_a_mark_come_back_from_ftfy_unchanged():
    rng = random.Random(0)
    chars = _alphabet()
    common = "’‘“”–—…\xa0«»©®™• "  # what English and European web text holds
    marks = mojibake_marks()
    unmarked = 0
    for _ in range(40_000):
        text = "".join(rng.choice(chars if rng.random() < 0.3 else common + string.ascii_lowercase) for _ in range(8))
        if not marks.search(text):
            unmarked += 1
            assert not is_bad(text) and ftfy.fix_text(text, ftfy_config()) == text, repr(text)
    assert unmarked > 5_000


def test_mojibake_is_still_repaired_and_clean_text_kept():
    broken, fixed = "The cafÃ© was open and the naÃ¯ve plan worked.", "The café was open and the naïve plan worked."
    assert fix_mojibake(broken) == fixed
    assert fix_mojibake("sÃ³") == "só"
    clean = "He said \u201cno\u201d \u2014 twice\u2026 it\u2019s caf\u00e9 \u00a9 2020"
    assert fix_mojibake(clean) == clean
    assert fix_mojibake("colour \x1b[31mred\x1b[0m \u2019") == "colour red \u2019"  # ftfy's escape removal still runs
