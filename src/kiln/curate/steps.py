"""Curation steps: each takes a `Document` and returns it (perhaps changed) or None to drop it.

Every step counts what it kept, changed and dropped (with the reason) in a `StepStats`, and keeps a
few dropped documents for inspection. Steps hold no state across documents except the two that
must: exact/near dedup (an index of what was kept) and decontamination (n-grams of evaluation text).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable

from kiln.corpus import Document
from kiln.curate.dedup import DedupConfig, MinHasher, NearDuplicateIndex, exact_key
from kiln.curate.normalize import NormalizeConfig, normalize
from kiln.curate.pii import redact
from kiln.curate.quality import QualityConfig, check_quality

_WORDS = re.compile(r"\w+")


@dataclass
class StepStats:
    """Counts for one step: documents in, kept, changed, dropped by reason, plus dropped samples."""

    name: str
    num_in: int = 0
    num_kept: int = 0
    num_changed: int = 0
    dropped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    samples: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"step": self.name, "in": self.num_in, "kept": self.num_kept, "changed": self.num_changed,
                "dropped": sum(self.dropped.values()), "dropped_by_reason": dict(self.dropped),
                "notes": dict(self.notes)}


class Step:
    """Base: subclasses implement `apply(doc, stats) -> Document | None`."""

    name = "step"
    max_samples = 20

    def __init__(self) -> None:
        self.stats = StepStats(self.name)

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        raise NotImplementedError

    def __call__(self, doc: Document) -> Document | None:
        st = self.stats
        st.num_in += 1
        before = doc.text
        out = self.apply(doc, st)
        if out is None:
            return None
        st.num_kept += 1
        st.num_changed += out.text != before
        return out

    def drop(self, doc: Document, reason: str, **detail: object) -> None:
        self.stats.dropped[reason] += 1
        if len(self.stats.samples) < self.max_samples:
            self.stats.samples.append({"id": doc.id, "reason": reason, **detail, "text": doc.text[:2000]})


class Normalize(Step):
    name = "normalize"

    def __init__(self, cfg: NormalizeConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        doc.text, changed = normalize(doc.text, self.cfg)
        stats.notes.update(changed)
        stats.notes["invalid_utf8_chars"] += doc.text.count("\ufffd")
        if not doc.text:
            self.drop(doc, "empty_after_normalize")
            return None
        return doc


class Quality(Step):
    name = "quality"

    def __init__(self, cfg: QualityConfig) -> None:
        super().__init__()
        self.cfg = cfg

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        reason = check_quality(doc.text, self.cfg)
        if reason:
            self.drop(doc, reason)
            return None
        return doc


class Language(Step):
    """Offline language ID (py3langid ships its model); the label and score go into metadata."""

    name = "language"

    def __init__(self, keep: Iterable[str], min_score: float) -> None:
        super().__init__()
        from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

        self.identifier = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
        self.keep = {k.strip() for k in keep if k.strip()}
        self.min_score = min_score

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        lang, score = self.identifier.classify(doc.text[:4000])
        doc.metadata["language"], doc.metadata["language_score"] = lang, round(float(score), 4)
        stats.notes[f"lang:{lang}"] += 1
        if self.keep and (lang not in self.keep or score < self.min_score):
            self.drop(doc, f"language:{lang}", score=round(float(score), 3))
            return None
        return doc


class RedactPII(Step):
    name = "pii"

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        doc.text, counts = redact(doc.text)
        stats.notes.update(counts)
        return doc


class Deduplicate(Step):
    """Exact then near duplicates; the first document of a cluster is kept."""

    name = "dedup"

    def __init__(self, cfg: DedupConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.seen: dict[bytes, str] = {}
        self.hasher = MinHasher(cfg)
        self.index = NearDuplicateIndex(cfg)
        self.clusters: Counter = Counter()

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        if self.cfg.exact:
            key = exact_key(doc.text)
            if key in self.seen:
                self.clusters[self.seen[key]] += 1
                self.drop(doc, "exact_duplicate", duplicate_of=self.seen[key])
                return None
            self.seen[key] = doc.id
        if self.cfg.near:
            twin = self.index.check_and_add(doc.id, self.hasher.signature(doc.text))
            if twin is not None:
                self.clusters[twin] += 1
                self.drop(doc, "near_duplicate", duplicate_of=twin)
                return None
        return doc


class Decontaminate(Step):
    """Drop documents sharing `min_shared` or more `ngram`-word sequences with the evaluation texts;
    flag (metadata ``eval_overlap_ngrams``) those that share fewer. GPT-3 dropped on one shared
    13-gram, right for short benchmark items; long evaluation documents share isolated formulaic
    phrases ("the Senate and House of Representatives ..."), which a higher count tells from copying."""

    name = "decontaminate"

    def __init__(self, eval_texts: Iterable[str], ngram: int, min_shared: int = 1) -> None:
        super().__init__()
        self.n = ngram
        self.min_shared = min_shared
        self.grams: set[int] = set()
        for text in eval_texts:
            self.grams.update(self._grams(text))

    def _grams(self, text: str) -> set[int]:
        words = _WORDS.findall(text.lower())
        return {hash(" ".join(words[i : i + self.n])) for i in range(len(words) - self.n + 1)}

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        shared = len(self._grams(doc.text) & self.grams)
        if shared >= self.min_shared:
            self.drop(doc, "eval_overlap", shared_ngrams=shared)
            return None
        if shared:
            doc.metadata["eval_overlap_ngrams"] = shared
            stats.notes["flagged_eval_overlap"] += 1
        return doc
