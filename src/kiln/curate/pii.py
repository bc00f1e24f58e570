"""PII redaction: e-mail addresses, phone numbers, IPv4/IPv6 addresses and payment-card numbers are
replaced by typed placeholders (``<EMAIL>``, ``<PHONE>``, ``<IP>``, ``<CARD>``) and counted.

Card numbers must pass the Luhn check, so ordinary long numbers (years, amounts, ids) survive.
Phone numbers need a telephone shape (``+1 (202) 555-0143``, ``555-123-4567``, ``020 7946 0958``), and
space-separated digit groups count only after a ``+`` or a trunk ``0``, so numeric tables, plain digit
runs and dates are left alone.
"""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
CARD = re.compile(r"\b(?:\d[ -]?){12,18}\d\b")
IPV4 = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")
PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .,-])(?:"
    r"\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}[ .-]?\d{3,4}(?:[ .-]?\d{3,4})?"  # +1 202 555 0143, +44 (20) ...
    r"|\(\d{3}\)[ .-]?\d{3}[.-]\d{4}"  # (202) 555-0143
    r"|\d{3}[.-]\d{3}[.-]\d{4}"  # 555-123-4567, 202.555.0143
    r"|0\d{2,4}[ -]\d{3,4}[ -]\d{3,4}"  # 020 7946 0958 (trunk prefix 0)
    r")(?![\w-])(?![ .,-]\d)"
)

# cheap scans that every match of the patterns above needs, so most documents skip the full patterns
_HAS_DIGIT_RUN = re.compile(r"[0-9][0-9 .()+-]{5,}[0-9]")  # cards, IPv4 and phones all look like this
_HAS_IPV6 = re.compile(r":[0-9A-Fa-f]{0,4}:")


def luhn_valid(digits: str) -> bool:
    """The Luhn checksum every payment-card number satisfies."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match) -> str | None:
    digits = re.sub(r"\D", "", match.group())
    return "<CARD>" if 13 <= len(digits) <= 19 and luhn_valid(digits) else None


def _ipv6(match: re.Match) -> str | None:
    try:
        ipaddress.IPv6Address(match.group())
    except ValueError:
        return None
    return "<IP>"


def redact(text: str) -> tuple[str, Counter]:
    """Replace PII with typed placeholders; returns the new text and counts per kind."""
    counts: Counter = Counter()

    def sub(pattern: re.Pattern, text: str, kind: str, check=None) -> str:
        def repl(m: re.Match) -> str:
            out = check(m) if check else f"<{kind}>"
            if out is None:
                return m.group()
            counts[kind] += 1
            return out

        return pattern.sub(repl, text)

    if "@" in text:
        text = sub(EMAIL, text, "EMAIL")
    digits = _HAS_DIGIT_RUN.search(text) is not None  # substitutions below only remove digit runs
    if digits:
        text = sub(CARD, text, "CARD", _card)  # before phones: a card's digit groups look like a phone
        text = sub(IPV4, text, "IP")
    if text.count(":") > 1 and _HAS_IPV6.search(text):  # counting is a memchr-speed pass; the scan is not
        text = sub(IPV6, text, "IP", _ipv6)
    if digits:
        text = sub(PHONE, text, "PHONE")
    return text, counts
