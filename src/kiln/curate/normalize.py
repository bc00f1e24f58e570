"""Text normalisation: mojibake repair, Unicode NFC, control characters, whitespace.

Each function is pure text -> text; `normalize` applies the ones switched on and says which changed
the text, so the pipeline can count them.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache
from typing import TYPE_CHECKING

from kiln.curate.config import NormalizeConfig

if TYPE_CHECKING:
    import ftfy

# C0/C1 controls except tab and newline (carriage returns are turned into newlines first).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")
_ASCII_CONTROL = bytes([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])  # what _CONTROL and CR handling touch
_SPACE_CHARS = "[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]"
# only runs that need changing: two or more spaces, or any other space character (a lone ' ' is fine)
_SPACES = re.compile(f" {_SPACE_CHARS}+|[\t\u00a0\u2000-\u200a\u202f\u205f\u3000]{_SPACE_CHARS}*")
_TRAILING = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")


@lru_cache(maxsize=1)
def ftfy_config() -> ftfy.TextFixerConfig:
    """ftfy's encoding repair only: its other fixes (quotes, ligatures, width) would change real text."""
    import ftfy

    return ftfy.TextFixerConfig(
        unescape_html=False,
        uncurl_quotes=False,
        fix_latin_ligatures=False,
        fix_character_width=False,
        normalization=None,
        fix_line_breaks=False,
        remove_control_chars=False,
    )


# Characters without which ftfy (6.x, with `ftfy_config`) leaves a text as it is: its encoding
# repair acts only where its BADNESS_RE finds mojibake, and every alternative of that expression
# needs one of these (per alternative its most telling position: a 'bad' character, an accented
# letter, a currency or numeric sign, a box-drawing character, or the alternative's own letters
# such as Ã or вЂ); its other fixes on by default touch only C1 controls (among these), surrogates
# and terminal escapes (\x1b). Curly quotes, dashes, ellipses and no-break spaces are not among
# them: English web text that has them skips ftfy (1.3 ms for 4.7 KB here) unless something else
# looks like mojibake. tests/curate/test_normalize.py fuzzes the claim against the installed ftfy.
_MOJIBAKE_CATEGORIES = ("c1", "bad", "upper_accented", "lower_accented", "currency", "numeric", "law", "box")
_MOJIBAKE_LETTERS = "ŒœÂÃÎÐ×ØÙà√≈Äâóвβā°ВГРСΒΓΞΟ\ud800-\udfff\x1b"


@lru_cache(maxsize=1)
def mojibake_marks() -> re.Pattern[str]:
    """A character class: a text without any of these is one ftfy would return unchanged."""
    from ftfy.badness import MOJIBAKE_CATEGORIES

    classes = "".join(MOJIBAKE_CATEGORIES[name] for name in _MOJIBAKE_CATEGORIES)  # each ends on a character
    return re.compile(f"[{classes}{_MOJIBAKE_LETTERS}]")


# ftfy's fixes other than encoding repair that `ftfy_config` leaves on act on these (C1 controls,
# surrogates, terminal escapes): a text holding one always goes to ftfy.
_OTHER_FIXES = re.compile("[\x80-\x9f\ud800-\udfff\x1b]")
BADNESS_REACH = 7
"""Characters in the longest match of ftfy's BADNESS_RE (6.3; tests/curate/test_normalize.py checks)."""


@lru_cache(maxsize=1)
def _badness() -> re.Pattern[str]:
    """ftfy's BADNESS_RE with '^' at every line start: ftfy judges a text line by line."""
    from ftfy.badness import BADNESS_RE

    return re.compile(BADNESS_RE.pattern, BADNESS_RE.flags | re.MULTILINE)


def looks_like_mojibake(text: str) -> bool:
    """ftfy's `is_bad` on any line of `text` (or a match spanning lines: then ftfy decides), tried only
    where a match could start: every match holds a mark, so it starts at most `BADNESS_REACH` - 1
    characters before one. ftfy's own search tries its 40 alternatives at every character (0.75 ms for
    4.7 KB of German), a few times slower than trying them beside the accented letters alone."""
    bad, tried, budget = _badness(), -1, len(text) // 8 + 64
    for mark in mojibake_marks().finditer(text):
        end = mark.start()
        first = max(end - BADNESS_REACH + 1, tried + 1)
        budget -= end + 1 - first
        if budget < 0:  # marks nearly everywhere (200 KB of them: 4x ftfy's scan): scan the rest in one call
            return bad.search(text, first) is not None
        for start in range(first, end + 1):
            if bad.match(text, start):
                return True
        tried = end
    return False


def fix_mojibake(text: str) -> str:
    if text.isascii():  # most web text: all ftfy would do is take out terminal escapes
        return _ftfy(text) if "\x1b" in text else text
    if not mojibake_marks().search(text):
        return text
    long = len(text) > ftfy_config().max_decode_length  # ftfy cuts such a line anywhere: let it judge
    if not (long or _OTHER_FIXES.search(text) or looks_like_mojibake(text)):
        return text  # accented text that is not mojibake (most of it in European languages)
    return _ftfy(text)


def _ftfy(text: str) -> str:
    from ftfy import fix_text

    return fix_text(text, ftfy_config())


def strip_control(text: str) -> str:
    if text.isascii():  # the common case: one C-speed pass says whether there is anything to do
        raw = text.encode("ascii")
        if len(raw.translate(None, _ASCII_CONTROL)) == len(raw):
            return text
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def normalize_whitespace(text: str) -> str:
    # each pattern only where a cheap substring test says it can match (the scans cost more than the tests)
    if "  " in text or "\t" in text or not text.isascii():
        text = _SPACES.sub(" ", text)
    if " \n" in text or "\t\n" in text:
        text = _TRAILING.sub("\n", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES.sub("\n\n", text)
    return text.strip()


def normalize(text: str, cfg: NormalizeConfig) -> tuple[str, list[str]]:
    """Apply the enabled fixes; returns the text and the names of the fixes that changed it."""
    changed: list[str] = []
    for name, on, fn in (
        ("mojibake", cfg.fix_mojibake, fix_mojibake),
        ("nfc", cfg.nfc, lambda t: t if unicodedata.is_normalized("NFC", t) else unicodedata.normalize("NFC", t)),
        ("control", cfg.strip_control, strip_control),
        ("whitespace", cfg.whitespace, normalize_whitespace),
    ):
        if on:
            new = fn(text)
            if new != text:
                changed.append(name)
                text = new
    return text, changed
