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
from typing import NamedTuple

import numpy as np

from kiln.curate.config import QualityConfig
from kiln.curate.wordbatch import WordBatch, distinct, find_sorted, repeats, runs
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
    return np.sort(hashes_of(sorted(STOP_WORDS)))


class WordFacts(NamedTuple):
    """What the word-level Gopher rules need of one document, computed for a batch at once."""

    mean_length: float
    alpha_fraction: float
    """Share of words holding a letter."""
    stop_words: int
    """Distinct stop words seen (among the first 256 words when those hold enough: prose shows them
    early; else among all)."""
    ngram_reason: str | None
    """The n-gram repetition rules' verdict (`ngram_reasons`)."""


def _stop_words_seen(batch: WordBatch, words: np.ndarray) -> np.ndarray:
    """Per document: how many distinct stop words its words at `words` (positions) hold."""
    stops = _stop_word_hashes()
    hit, at = find_sorted(stops, batch.hashes[words])
    pairs = distinct(batch.doc[words[hit]] * len(stops) + at)  # (document, stop word), once each
    return np.bincount(pairs // len(stops), minlength=batch.num_docs)


def word_facts(words: list[Words], cfg: QualityConfig) -> list[WordFacts]:
    """`WordFacts` of each document of a batch, in a few whole-batch passes."""
    batch = WordBatch(words)
    counts = np.diff(batch.offsets)
    nan = np.full(batch.num_docs, np.nan)  # a document without words has no mean (and fails on it)
    mean_length = np.divide(batch.chars, counts, out=nan.copy(), where=counts > 0)
    letters = np.bincount(batch.doc, weights=batch.has_letter, minlength=batch.num_docs)
    alpha = np.divide(letters, counts, out=nan.copy(), where=counts > 0)
    everywhere = np.arange(len(batch.hashes))
    early = everywhere[everywhere - batch.offsets[batch.doc] < 256]
    stops = _stop_words_seen(batch, early)
    few = stops < cfg.min_stop_words
    if few.any():
        stops[few] = _stop_words_seen(batch, everywhere[few[batch.doc]])[few]
    grams = ngram_reasons(batch, cfg)
    batch.share(words)
    return [WordFacts(m, a, s, g) for m, a, s, g in zip(mean_length.tolist(), alpha.tolist(), stops.tolist(), grams)]


def _dup_ngram_fractions(batch: WordBatch, n: int, active: np.ndarray) -> np.ndarray:
    """Per document (the `active` ones; 0 elsewhere): the share of its word bytes inside n-grams that
    repeat an earlier n-gram of the same document."""
    pos, keys = batch.keys(n)
    inside = active[batch.doc[pos]]
    if not inside.all():
        pos, keys = pos[inside], keys[inside]
    starts = pos[repeats(keys)]
    if len(starts) == 0:
        return np.zeros(batch.num_docs)
    depth = np.zeros(len(batch.hashes) + 1, dtype=np.int64)  # +1 where a repeat starts, -1 past its end
    np.add.at(depth, starts, 1)
    np.add.at(depth, starts + n, -1)
    covered = np.cumsum(depth[:-1]) > 0
    covered_chars = np.bincount(batch.doc, weights=batch.lengths * covered, minlength=batch.num_docs)
    return covered_chars / np.maximum(batch.chars, 1)


def _top_ngrams(batch: WordBatch, cfg: QualityConfig, reasons: list[str | None], active: np.ndarray) -> None:
    """Gopher's most-frequent 2/3/4-gram rule, for every active document at once: a document that
    fails gets its reason and leaves `active`. A document's most frequent n-gram (ties: the least
    hash) covers its count times its bytes."""
    total = np.maximum(batch.chars, 1)
    top_count = np.full(batch.num_docs, -1, dtype=np.int64)  # -1: no n-gram counted yet
    none = np.iinfo(np.uint64).max
    for n, limit in zip((2, 3, 4), cfg.max_top_ngram_frac):
        pos = batch.starts(n)
        doc = batch.doc[pos]
        need = active & (np.diff(batch.offsets) >= n)
        counted = top_count >= 0
        if counted.any():
            # no n-gram repeats more often than the top (n-1)-gram, nor spans more than the widest n
            # words: when even that product is under the limit, the document needs no count
            widest = batch.per_doc_max(doc, batch.widths(pos, n))
            need &= ~(counted & (top_count * widest / total <= limit))
        if not need.any():
            continue
        if not need.all():
            pos, doc = pos[need[doc]], doc[need[doc]]
        keys = batch.key_of(pos, batch.gram_hashes(n)[pos])
        key, count = runs(keys)
        run_doc = batch.doc_of(key)
        top = batch.per_doc_max(run_doc, count)
        top_count[need] = top[need]
        tied = (count == top[run_doc]) & (count > 1)
        least = np.full(batch.num_docs, none, dtype=np.uint64)
        np.minimum.at(least, run_doc[tied], key[tied])
        at = np.flatnonzero((keys == least[doc]) & (least[doc] != none))  # every occurrence of each pick
        picked, first = np.unique(doc[at], return_index=True)
        share = top[picked] * batch.widths(pos[at[first]], n) / total[picked]
        for d in picked[share > limit].tolist():
            reasons[d] = f"top_{n}gram"
            active[d] = False


def ngram_reasons(batch: WordBatch, cfg: QualityConfig) -> list[str | None]:
    """Gopher's n-gram repetition rules for each document ('top_3gram', 'dup_5gram', or None when it
    passes), for a batch at once."""
    reasons: list[str | None] = [None] * batch.num_docs
    active = np.ones(batch.num_docs, dtype=bool)
    _top_ngrams(batch, cfg, reasons, active)
    # a repeated (n+1)-gram is made of repeated n-grams, so coverage only shrinks as n grows:
    # below the smallest limit left, every larger n passes too
    limits = list(zip(range(5, 11), cfg.max_dup_ngram_frac))
    for i, (n, limit) in enumerate(limits):
        if not active.any():
            break
        frac = _dup_ngram_fractions(batch, n, active)
        for d in np.flatnonzero(active & (frac > limit)).tolist():
            reasons[d] = f"dup_{n}gram"
        active &= (frac <= limit) & (frac > min(lim for _, lim in limits[i:]))
    return reasons


_SENTENCE_END = re.compile(r"[.!?](?:\s|$)")


def check_quality(text: str, cfg: QualityConfig, words: Words | None = None) -> str | None:
    """The first failed rule's name (e.g. 'gopher:min_words'), or None if the document passes.

    Words are the folded words of `kiln.curate.words` (letters and digits; punctuation splits)."""
    return quality_reasons([text], [words if words is not None else analyze(text)], cfg)[0]


def quality_reasons(texts: list[str], words: list[Words], cfg: QualityConfig) -> list[str | None]:
    """`check_quality` of each text (with its words), the n-gram rules for the whole batch at once."""
    facts = word_facts(words, cfg)
    return [_first_failure(t, len(w), f, cfg) for t, w, f in zip(texts, words, facts)]


def _first_failure(text: str, num_words: int, facts: WordFacts, cfg: QualityConfig) -> str | None:
    """The rules in order, the word-level ones from `facts`."""
    if num_words < cfg.min_words:
        return "gopher:min_words"
    if num_words > cfg.max_words:
        return "gopher:max_words"
    if not cfg.min_mean_word_length <= facts.mean_length <= cfg.max_mean_word_length:
        return "gopher:mean_word_length"
    if (text.count("#") + text.count("...") + text.count("…")) / num_words > cfg.max_symbol_word_ratio:
        return "gopher:symbol_ratio"
    lines = [ln for ln in map(str.strip, text.split("\n")) if ln]
    num_lines = max(len(lines), 1)
    if sum(ln.startswith(BULLETS) for ln in lines) / num_lines > cfg.max_bullet_lines:
        return "gopher:bullet_lines"
    if sum(ln.endswith(("...", "…")) for ln in lines) / num_lines > cfg.max_ellipsis_lines:
        return "gopher:ellipsis_lines"
    if facts.alpha_fraction < cfg.min_alpha_words:
        return "gopher:alpha_words"
    if facts.stop_words < cfg.min_stop_words:
        return "gopher:stop_words"
    dup_lines, dup_line_chars = _dup_fraction(lines)
    if dup_lines > cfg.max_dup_line_frac or dup_line_chars > cfg.max_dup_line_char_frac:
        return "gopher:dup_lines"
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    dup_paras, dup_para_chars = _dup_fraction(paragraphs)
    if dup_paras > cfg.max_dup_line_frac or dup_para_chars > cfg.max_dup_line_char_frac:
        return "gopher:dup_paragraphs"
    if facts.ngram_reason:
        return f"gopher:{facts.ngram_reason}"
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
