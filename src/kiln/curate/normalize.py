"""Text normalisation: mojibake repair, Unicode NFC, control characters, whitespace.

Each function is pure text -> text; `normalize` applies the ones switched on and says which changed
the text, so the pipeline can count them.
"""

from __future__ import annotations

import re
import unicodedata

from kiln.curate.config import NormalizeConfig

# C0/C1 controls except tab and newline (carriage returns are turned into newlines first).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b\ufeff]")
_ASCII_CONTROL = bytes([*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F])  # what _CONTROL and CR handling touch
_SPACE_CHARS = "[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]"
# only runs that need changing: two or more spaces, or any other space character (a lone ' ' is fine)
_SPACES = re.compile(f" {_SPACE_CHARS}+|[\t\u00a0\u2000-\u200a\u202f\u205f\u3000]{_SPACE_CHARS}*")
_TRAILING = re.compile(r"[ \t]+\n")
_BLANK_LINES = re.compile(r"\n{3,}")


def fix_mojibake(text: str) -> str:
    if text.isascii():  # mojibake needs non-ASCII characters; most web text is ASCII
        return text
    import ftfy

    # only the encoding repair: ftfy's other fixes (quotes, ligatures, width) would change real text
    return ftfy.fix_text(
        text,
        unescape_html=False,
        uncurl_quotes=False,
        fix_latin_ligatures=False,
        fix_character_width=False,
        normalization=None,
        fix_line_breaks=False,
        remove_control_chars=False,
    )


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
