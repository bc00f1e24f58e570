"""Mojibake repair: ftfy is skipped only for texts it would return unchanged."""

import itertools
import random
import re
import string

import ftfy
from ftfy.badness import BADNESS_RE, MOJIBAKE_CATEGORIES, is_bad

from kiln.curate.normalize import BADNESS_REACH, fix_mojibake, ftfy_config, looks_like_mojibake, mojibake_marks


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


def test_searching_beside_the_marks_finds_what_ftfy_finds_on_a_line():
    """Equal to ftfy's `is_bad` on one line; on several, true where it is true for some line."""
    chars = _alphabet()
    pairs = [a + b for a, b in itertools.product(chars, repeat=2)]
    rng = random.Random(2)
    texts = pairs + [f"Well, {p} then" for p in rng.sample(pairs, 20_000)]
    texts += [f"x{p[0]}y{p[1]}" for p in rng.sample(pairs, 20_000)]
    texts += ["".join(rng.choices(chars, k=rng.randint(3, 8))) for _ in range(40_000)]
    found = 0
    for text in texts:
        lines = re.findall(r"[^\n]*\n|[^\n]+", text)  # ftfy's segments: cut after each '\n' only
        if len(lines) > 1:
            assert looks_like_mojibake(text) >= any(is_bad(line) for line in lines), repr(text)
        else:
            assert looks_like_mojibake(text) == is_bad(text), repr(text)
        found += looks_like_mojibake(text)
    assert found > 10_000


def test_no_match_of_ftfys_expression_is_longer_than_the_reach():
    try:
        from re._parser import parse  # Python 3.11+
    except ImportError:  # pragma: no cover - Python 3.10
        from sre_parse import parse  # type: ignore[no-redef]
    assert parse(BADNESS_RE.pattern, BADNESS_RE.flags).getwidth()[1] <= BADNESS_REACH


def test_a_line_that_starts_with_mojibake_is_repaired():
    """ftfy judges each line alone, so '^' in its expression matches at every line start."""
    for text in ("1.\nÃ x", "1.\nÂ x"):
        assert not BADNESS_RE.search(text)  # the whole text does not look bad, its second line does
        assert fix_mojibake(text) == ftfy.fix_text(text, ftfy_config()) != text


def test_texts_ftfy_is_skipped_for_come_back_from_it_unchanged():
    """Random short texts of ftfy's named characters, European accents and web punctuation, over
    line breaks: kiln's repair equals ftfy's, whether kiln skips it (most) or not."""
    rng = random.Random(1)
    chars = _alphabet()
    common = "’‘“”–—…\xa0«»©®™•éèàüöäßñç \n"
    skipped = 0
    for _ in range(20_000):
        text = "".join(rng.choice(chars if rng.random() < 0.2 else common + string.ascii_lowercase) for _ in range(10))
        want = ftfy.fix_text(text, ftfy_config())
        assert fix_mojibake(text) == want, repr(text)
        skipped += mojibake_marks().search(text) is not None and not looks_like_mojibake(text)
    assert skipped > 5_000


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


def test_terminal_escapes_in_ascii_text_go_to_ftfy():
    text = "colour \x1b[31mred\x1b[0m"
    assert fix_mojibake(text) == ftfy.fix_text(text, ftfy_config()) == "colour red"


def test_a_line_longer_than_ftfy_cuts_is_left_to_ftfy():
    """ftfy cuts a line at max_decode_length and judges the pieces: '^' then matches at the cut."""
    limit = ftfy_config().max_decode_length
    text = "é" + "1" * (limit - 1) + "Ã x"
    assert not looks_like_mojibake(text)  # the whole line holds no mojibake...
    want = ftfy.fix_text(text, ftfy_config())
    assert want != text and fix_mojibake(text) == want  # ...the piece after the cut does


def test_text_dense_with_marks_is_scanned_once_with_the_same_verdict():
    """Past about one try in eight characters the rest of the text is searched in one call."""
    for text in ("é" * 5_000, "é" * 5_000 + "cafÃ© ", "é" * 5_000 + "\nÃ x", "cafÃ© " + "é" * 5_000):
        lines = re.findall(r"[^\n]*\n|[^\n]+", text)
        assert looks_like_mojibake(text) == any(is_bad(line) for line in lines), text[-8:]
        assert fix_mojibake(text) == ftfy.fix_text(text, ftfy_config())
