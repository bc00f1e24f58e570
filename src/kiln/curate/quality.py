"""Quality filters in the style of Gopher, C4 and FineWeb: each check returns a drop reason or None.

Thresholds and their origin (defaults follow datatrove's implementations of the papers):
- Gopher quality (Rae et al. 2021, appendix A): 50..100,000 words; mean word length 3..10 chars;
  symbol ('#', '...') to word ratio <= 0.1; <= 90 % of lines start with a bullet; <= 30 % of lines end
  with an ellipsis; >= 80 % of words contain a letter; >= 2 of the stop words the/be/to/of/and/that/have/with.
Words are letter/digit runs, lower-cased (punctuation splits: "don't" is two words); lengths in bytes.
- Gopher repetition: duplicate lines <= 30 % of lines and <= 20 % of characters; duplicate paragraphs
  likewise; most frequent 2/3/4-gram covers <= 20/18/16 % of characters; duplicated 5..10-grams cover
  <= 15..10 % of characters.
- C4 (Raffel et al. 2020): no 'lorem ipsum'; no curly braces ('{' marks code); documents need >= 3
  sentences. C4's line-level rules (drop lines without terminal punctuation) are not applied: they
  rewrite documents, and FineWeb's ratio below keeps the signal without deleting text.
- FineWeb (Penedo et al. 2024): >= 12 % of lines end in punctuation; <= 67 % of lines shorter than
  30 chars; characters in duplicated lines <= 10 % (FineWeb used 1 %, tuned for web crawl; long
  speeches repeat salutations, so kiln is looser); newlines per word <= 0.3.
- Boilerplate: short (< 200 char) lines of cookie notices, 'enable javascript', 'all rights reserved',
  terms/privacy make up > 20 % of lines.
The FineWeb line-shape rules apply only to documents of 3+ lines.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from kiln.curate.config import QualityConfig
from kiln.curate.words import Words, analyze, hashes_of

STOP_WORDS = frozenset(["the", "be", "to", "of", "and", "that", "have", "with"])
BULLETS = ("•", "●", "○", "▪", "-", "*", "·", "‣", "–")
PUNCT_END = (".", "!", "?", '"', "'", "”", "’", ":", ";", ")")
BOILERPLATE = re.compile(
    r"cookie|javascript|all rights reserved|terms of (use|service)|privacy policy|subscribe to our newsletter|"
    r"click here|sign up for|log ?in to",
    re.I,
)
MIN_LINES_FOR_LINE_RULES = 3


def _dup_fraction(items: list[str]) -> tuple[float, float]:
    """(fraction of items that repeat an earlier one, fraction of their characters)."""
    seen: set[str] = set()
    dup = dup_chars = 0
    total_chars = sum(len(x) for x in items) or 1
    for item in items:
        if item in seen:
            dup += 1
            dup_chars += len(item)
        seen.add(item)
    return dup / max(len(items), 1), dup_chars / total_chars


@lru_cache(maxsize=1)
def _stop_word_hashes() -> np.ndarray:
    return hashes_of(sorted(STOP_WORDS))


def _stop_words_seen(hashes: np.ndarray) -> int:
    """How many distinct stop words these word hashes hold."""
    return int((hashes[:, None] == _stop_word_hashes()[None, :]).any(axis=0).sum())


def _dup_ngram_fraction(words: Words, n: int) -> float:
    """Share of word characters inside n-grams that repeat an earlier n-gram."""
    grams = words.grams(n)
    ordered = np.sort(grams)  # most text repeats no n-gram: a plain sort (SIMD) says so cheaply
    if not (ordered[1:] == ordered[:-1]).any():
        return 0.0
    order = np.argsort(grams, kind="stable")  # equal grams stay in text order: the first is the original
    ordered = grams[order]
    repeat = np.zeros(len(grams), dtype=bool)
    repeat[order[1:]] = ordered[1:] == ordered[:-1]
    starts = np.flatnonzero(repeat)
    if len(starts) == 0:
        return 0.0
    depth = np.zeros(len(words) + 1, dtype=np.int64)
    np.add.at(depth, starts, 1)
    np.add.at(depth, starts + n, -1)
    covered = np.cumsum(depth[:-1]) > 0
    return float(words.lengths[covered].sum()) / max(int(words.lengths.sum()), 1)


def _ngram_checks(words: Words, cfg: QualityConfig) -> str | None:
    total_chars = max(int(words.lengths.sum()), 1)
    span = np.concatenate(([0], np.cumsum(words.lengths)))
    top_count = None
    for n, limit in zip((2, 3, 4), cfg.max_top_ngram_frac):
        grams = words.grams(n)
        if len(grams) == 0:
            continue
        # no n-gram repeats more often than the top (n-1)-gram, nor spans more than the widest n
        # words: when even that product is under the limit, the sort can be skipped
        if top_count is not None and top_count * int((span[n:] - span[:-n]).max()) / total_chars <= limit:
            continue
        ordered = np.sort(grams)
        bounds = np.concatenate(([0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1, [len(ordered)]))
        runs = np.diff(bounds)
        top = int(runs.argmax())
        top_count = int(runs[top])
        if runs[top] > 1:
            first = int(np.argmax(grams == ordered[bounds[top]]))
            chars = int(words.lengths[first : first + n].sum())
            if runs[top] * chars / total_chars > limit:
                return f"top_{n}gram"
    # a repeated (n+1)-gram is made of repeated n-grams, so coverage only shrinks as n grows:
    # below the smallest limit at n = 5, every larger n passes too
    limits = list(zip(range(5, 11), cfg.max_dup_ngram_frac))
    for i, (n, limit) in enumerate(limits):
        frac = _dup_ngram_fraction(words, n)
        if frac > limit:
            return f"dup_{n}gram"
        if frac <= min(lim for _, lim in limits[i:]):
            return None
    return None


_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


def check_quality(text: str, cfg: QualityConfig, words: Words | None = None) -> str | None:
    """The first failed rule's name (e.g. 'gopher:min_words'), or None if the document passes.

    Words are the folded words of `kiln.curate.words` (letters and digits; punctuation splits)."""
    words = words if words is not None else analyze(text)
    num_words = len(words)
    if num_words < cfg.min_words:
        return "gopher:min_words"
    if num_words > cfg.max_words:
        return "gopher:max_words"
    mean_len = float(words.lengths.mean())
    if not cfg.min_mean_word_length <= mean_len <= cfg.max_mean_word_length:
        return "gopher:mean_word_length"
    if (text.count("#") + text.count("...") + text.count("…")) / num_words > cfg.max_symbol_word_ratio:
        return "gopher:symbol_ratio"
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    num_lines = max(len(lines), 1)
    if sum(ln.startswith(BULLETS) for ln in lines) / num_lines > cfg.max_bullet_lines:
        return "gopher:bullet_lines"
    if sum(ln.endswith(("...", "…")) for ln in lines) / num_lines > cfg.max_ellipsis_lines:
        return "gopher:ellipsis_lines"
    if words.has_letter.mean() < cfg.min_alpha_words:
        return "gopher:alpha_words"
    if _stop_words_seen(words.hashes[:256]) < cfg.min_stop_words and (  # most prose shows them early
        _stop_words_seen(words.hashes) < cfg.min_stop_words
    ):
        return "gopher:stop_words"
    dup_lines, dup_line_chars = _dup_fraction(lines)
    if dup_lines > cfg.max_dup_line_frac or dup_line_chars > cfg.max_dup_line_char_frac:
        return "gopher:dup_lines"
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    dup_paras, dup_para_chars = _dup_fraction(paragraphs)
    if dup_paras > cfg.max_dup_line_frac or dup_para_chars > cfg.max_dup_line_char_frac:
        return "gopher:dup_paragraphs"
    reason = _ngram_checks(words, cfg)
    if reason:
        return f"gopher:{reason}"
    lowered = text.lower()
    if "lorem ipsum" in lowered:
        return "c4:lorem_ipsum"
    if "{" in text:
        return "c4:curly_bracket"
    if sum(1 for _ in zip(range(cfg.min_sentences), _SENTENCE_END.finditer(text))) < cfg.min_sentences:
        return "c4:min_sentences"
    # line-shape rules need lines: a one-paragraph document has no line structure to judge
    if num_lines >= MIN_LINES_FOR_LINE_RULES:
        if sum(ln.endswith(PUNCT_END) for ln in lines) / num_lines < cfg.min_punct_lines:
            return "fineweb:line_punct"
        if sum(len(ln) < 30 for ln in lines) / num_lines > cfg.max_short_lines:
            return "fineweb:short_lines"
    if dup_line_chars > cfg.max_dup_line_chars_fineweb:
        return "fineweb:dup_line_chars"
    if text.count("\n") / num_words > cfg.max_newlines_per_word:
        return "fineweb:newlines_per_word"
    # boilerplate is short lines; a long paragraph that mentions 'terms of service' is prose
    if sum(len(ln) < 200 and bool(BOILERPLATE.search(ln)) for ln in lines) / num_lines > cfg.max_boilerplate_lines:
        return "boilerplate"
    return None
