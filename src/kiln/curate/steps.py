"""Curation steps: each takes a `Document` and returns it (perhaps changed) or None to drop it.

Every step counts what it kept, changed and dropped (with the reason) in a `StepStats`, and keeps a
few dropped documents for inspection. Steps are pure functions of their configuration (and, for
decontamination, of fixed evaluation n-grams), so they run in any number of worker processes;
deduplication alone keeps an index across documents and is split into pure `keys` and an ordered
`decide`.
"""

from __future__ import annotations

import itertools
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from kiln.corpus import CorpusConfig, Document, split_of
from kiln.curate.config import DedupConfig, NormalizeConfig, QualityConfig
from kiln.curate.dedup import MinHasher, NearDuplicateIndex, exact_key
from kiln.curate.langid import load_identifier
from kiln.curate.normalize import normalize
from kiln.curate.pii import redact
from kiln.curate.quality import check_quality, quality_reasons
from kiln.curate.wordbatch import HashSet, WordBatch, chunks, distinct
from kiln.curate.words import Words, analyze_many, cache_words, words_of

T = TypeVar("T")


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
    max_samples: int = 20

    def drop(self, doc: Document, reason: str, **detail: object) -> None:
        self.dropped[reason] += 1
        if len(self.samples) < self.max_samples:
            self.samples.append({"id": doc.id, "reason": reason, **detail, "text": doc.text[:2000]})

    def merge(self, other: StepStats) -> None:
        """Add `other`'s counts (a later part of the stream) to these."""
        self.num_in += other.num_in
        self.num_kept += other.num_kept
        self.num_changed += other.num_changed
        self.dropped.update(other.dropped)
        self.notes.update(other.notes)
        self.samples.extend(other.samples[: self.max_samples - len(self.samples)])

    def as_dict(self) -> dict:
        return {
            "step": self.name,
            "in": self.num_in,
            "kept": self.num_kept,
            "changed": self.num_changed,
            "dropped": sum(self.dropped.values()),
            "dropped_by_reason": dict(self.dropped),
            "notes": dict(self.notes),
        }


class Step:
    """Base: subclasses implement `apply(doc, stats) -> Document | None` (None drops the document,
    after `stats.drop(doc, reason)`). Steps hold configuration only, so a copy in each worker process
    gives the same answers; counts go to the `StepStats` the caller passes."""

    name = "step"

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        raise NotImplementedError

    def run(self, docs: list[Document], stats: StepStats) -> list[Document]:
        """The step over a batch: the documents it keeps, in order. Steps that gain from seeing the
        batch at once (shared vectorised work) override this and give the same results."""
        return [kept for doc in docs if (kept := self(doc, stats)) is not None]

    def remember(self, docs: list[Document], values: Iterable[object]) -> None:
        """Keep what `run` worked out for the whole batch, per document, for `apply` to `recall`."""
        for doc, value in zip(docs, values, strict=True):
            doc.cache[self.name] = (self, doc.text, value)

    def recall(self, doc: Document, compute: Callable[[], T]) -> T:
        """What this step's `run` kept for this very text, else `compute()` (a document given to `apply`
        alone, or one another step's copy left)."""
        kept = doc.cache.pop(self.name, None)
        return kept[2] if kept is not None and kept[0] is self and kept[1] is doc.text else compute()

    def __call__(self, doc: Document, stats: StepStats) -> Document | None:
        stats.num_in += 1
        before = doc.text
        out = self.apply(doc, stats)
        if out is None:
            return None
        stats.num_kept += 1
        stats.num_changed += out.text != before
        return out


class Normalize(Step):
    name = "normalize"

    def __init__(self, cfg: NormalizeConfig) -> None:
        self.cfg = cfg

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        doc.text, changed = normalize(doc.text, self.cfg)
        stats.notes.update(changed)
        stats.notes["invalid_utf8_chars"] += doc.text.count("\ufffd")
        if not doc.text:
            stats.drop(doc, "empty_after_normalize")
            return None
        return doc


class Quality(Step):
    name = "quality"

    def __init__(self, cfg: QualityConfig) -> None:
        self.cfg = cfg

    def run(self, docs: list[Document], stats: StepStats) -> list[Document]:
        cache_words(docs)  # the word views of the whole batch in a few vectorised passes
        for chunk in chunks(docs):
            self.remember(chunk, quality_reasons([d.text for d in chunk], [words_of(d) for d in chunk], self.cfg))
        return super().run(docs, stats)

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        reason = self.recall(doc, lambda: check_quality(doc.text, self.cfg, words_of(doc)))
        if reason:
            stats.drop(doc, reason)
            return None
        return doc


class Language(Step):
    """Offline language ID (py3langid's shipped model, `kiln.curate.langid`) on the first
    `sample_chars` characters; the label and score go into metadata. A few hundred words decide the
    language as well as the whole text does, at a fraction of the cost."""

    name = "language"

    def __init__(self, keep: Iterable[str], min_score: float, sample_chars: int = 1000) -> None:
        self.identifier = load_identifier()
        self.keep = {k.strip() for k in keep if k.strip()}
        self.min_score = min_score
        self.sample_chars = sample_chars

    def run(self, docs: list[Document], stats: StepStats) -> list[Document]:
        self.remember(docs, self.identifier.classify_many([d.text[: self.sample_chars] for d in docs]))
        return super().run(docs, stats)

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        lang, score = self.recall(doc, lambda: self.identifier.classify(doc.text[: self.sample_chars]))
        doc.metadata["language"], doc.metadata["language_score"] = lang, round(float(score), 4)
        stats.notes[f"lang:{lang}"] += 1
        if self.keep and (lang not in self.keep or score < self.min_score):
            stats.drop(doc, f"language:{lang}", score=round(float(score), 3))
            return None
        stats.notes[f"kept_lang:{lang}"] += 1
        return doc


class RedactPII(Step):
    name = "pii"

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        doc.text, counts = redact(doc.text)
        stats.notes.update(counts)
        return doc


def eval_ngrams(texts: Iterable[str], n: int) -> np.ndarray:
    """Sorted unique hashes of every `n`-word sequence in the evaluation texts."""
    parts: list[np.ndarray] = []
    texts = iter(texts)
    while chunk := list(itertools.islice(texts, 1000)):  # the word views in vectorised passes
        parts += [w.grams(n) for w in analyze_many(chunk)]
    return distinct(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.uint64)


class Decontaminate(Step):
    """Drop documents sharing `min_shared` or more `ngram`-word sequences with the evaluation texts;
    flag (metadata ``eval_overlap_ngrams``) those that share fewer. GPT-3 dropped on one shared
    13-gram, right for short benchmark items; long evaluation documents share isolated formulaic
    phrases ("the Senate and House of Representatives ..."), which a higher count tells from copying.
    Documents of the validation split (`skip_split`) are the evaluation text itself and pass."""

    name = "decontaminate"

    def __init__(
        self, grams: np.ndarray | Path, ngram: int, min_shared: int = 1, skip_split: CorpusConfig | None = None
    ):
        """`grams`: `eval_ngrams`, or an .npy file of them, read when the first document arrives (so a
        worker can be built before the main process has computed them)."""
        self.n, self.min_shared, self.skip_split = ngram, min_shared, skip_split
        self.grams_file = Path(grams) if isinstance(grams, (str, os.PathLike)) else None
        if self.grams_file is None:
            self.grams = HashSet(np.asarray(grams))

    def _evaluation_text(self, doc: Document) -> bool:
        return self.skip_split is not None and split_of(doc.id, self.skip_split) == "val"

    def shared(self, docs: list[Document]) -> list[int]:
        """How many distinct evaluation n-grams each document holds, for a batch at once."""
        if self.grams_file is not None:
            self.grams = HashSet(np.load(self.grams_file))
            self.grams_file = None
        if len(self.grams) == 0:
            return [0] * len(docs)
        batch = WordBatch([words_of(d) for d in docs])
        pos, grams = batch.grams(self.n)
        found = self.grams.find(grams)[0]
        pairs = distinct(batch.key_of(pos[found], grams[found]))  # each n-gram once per document
        return np.bincount(batch.doc_of(pairs), minlength=len(docs)).tolist()

    def _count(self, doc: Document) -> int | None:
        """`shared` of one document; None for evaluation text, which passes uncounted."""
        return None if self._evaluation_text(doc) else self.shared([doc])[0]

    def run(self, docs: list[Document], stats: StepStats) -> list[Document]:
        evaluation = [self._evaluation_text(d) for d in docs]
        self.remember([d for d, e in zip(docs, evaluation) if e], [None] * sum(evaluation))
        todo = [d for d, e in zip(docs, evaluation) if not e]
        cache_words(todo)  # in vectorised passes where no earlier step made them
        for chunk in chunks(todo):
            self.remember(chunk, self.shared(chunk))
        return super().run(docs, stats)

    def apply(self, doc: Document, stats: StepStats) -> Document | None:
        shared = self.recall(doc, lambda: self._count(doc))
        if shared is None:
            return doc
        if shared >= self.min_shared:
            stats.drop(doc, "eval_overlap", shared_ngrams=shared)
            return None
        if shared:
            doc.metadata["eval_overlap_ngrams"] = shared
            stats.notes["flagged_eval_overlap"] += 1
        return doc


class Deduplicate:
    """Exact then near duplicates; the first document of a cluster (in stream order) is kept.

    `keys` is pure and runs in the workers; `decide` holds the index and runs in one process, in
    stream order, so the result does not depend on the number of workers."""

    name = "dedup"

    def __init__(self, cfg: DedupConfig) -> None:
        self.cfg = cfg
        self.seen: dict[bytes, str] = {}
        self.hasher = MinHasher(cfg)
        self.index = NearDuplicateIndex(cfg)
        self.clusters: Counter = Counter()

    def keys(self, words: list[Words]) -> list[tuple[bytes | None, np.ndarray | None]]:
        """(exact key, MinHash signature) of each document of a batch from its words."""
        exact = [exact_key(w) for w in words] if self.cfg.exact else [None] * len(words)
        near = list(self.hasher.signatures(words)) if self.cfg.near else [None] * len(words)
        return list(zip(exact, near))

    def decide(self, doc: Document, keys: tuple[bytes | None, np.ndarray | None], stats: StepStats) -> bool:
        """True to keep `doc`; counts in `stats`."""
        stats.num_in += 1
        exact, signature = keys
        if exact is not None:
            if exact in self.seen:
                self.clusters[self.seen[exact]] += 1
                stats.drop(doc, "exact_duplicate", duplicate_of=self.seen[exact])
                return False
            self.seen[exact] = doc.id
        if signature is not None:
            twin = self.index.check_and_add(doc.id, signature)
            if twin is not None:
                self.clusters[twin] += 1
                stats.drop(doc, "near_duplicate", duplicate_of=twin)
                return False
        stats.num_kept += 1
        return True
