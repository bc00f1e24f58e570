"""`kiln curate`: raw documents -> normalised, filtered, language-checked, deduplicated,
decontaminated, PII-redacted documents, written as JSONL with a manifest, dropped samples and a data card.

The output folder (``run_dir/curated``) is itself a corpus: `kiln tokenizer` and `kiln tokenize` read
it in place of the raw corpus. Documents keep their ids, so the train/validation split is unchanged.
Documents stream through the steps in batches, on worker processes when asked (same output for
any number); only the dedup index grows with the corpus. Steps run in the order normalise, language,
quality, decontaminate, PII, dedup; the training mix is applied when the output is read.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from tqdm import tqdm

from kiln.corpus import (
    CURATED_FORMAT,
    CorpusConfig,
    Document,
    ReadStats,
    SourceConfig,
    read_documents,
    sources_of,
    split_documents,
    split_of,
    utf8_size,
)
from kiln.curate.config import CurateConfig
from kiln.curate.datacard import write_data_card
from kiln.curate.groupterms import GroupTermCounter
from kiln.curate.mix import MixTally, plan_mix
from kiln.curate.steps import (
    Decontaminate,
    Deduplicate,
    Language,
    Normalize,
    Quality,
    RedactPII,
    Step,
    StepStats,
    eval_ngrams,
)
from kiln.curate.workers import LocalSteps, StepPool, batches, resolve_workers
from kiln.errors import KilnError
from kiln.staging import Publication, StagedFolder, rename_synced

SKIPPED_LOG = "skipped.log"
"""Every unreadable input of the curation, one per line."""
REFUSED = "refused"
"""Where a curation that kept nothing leaves its dropped samples and skipped.log (beside the last
curation's, which stay)."""
REPLACES = [
    "documents_*.jsonl",
    "dropped/*.jsonl",
    SKIPPED_LOG,
    "data_card.*",
    f"{REFUSED}/dropped/*.jsonl",
    f"{REFUSED}/{SKIPPED_LOG}",
]
"""What a published curation replaces: the last one's files, and what a refused one left."""


class _JsonlShards:
    """Numbered JSONL files, each written under a staged name (sha256 recorded when full) and published
    together by `publish`, which replaces the last curation's files only then: a curation that fails
    or keeps nothing leaves the last one as it was (`discard`)."""

    def __init__(self, out_dir: Path, per_file: int) -> None:
        self.staging = StagedFolder(out_dir)  # removes what an interrupted curation staged
        self.per_file = per_file
        self.files: list[dict] = []
        self._f: TextIO | None = None
        self._count = 0
        self.longest_line = 0
        """Bytes of the longest line written (escaping and metadata make it longer than its text)."""

    def write(self, row: dict) -> None:
        if self._f is None:
            self._name = f"documents_{len(self.files):05d}.jsonl"
            self._path = self.staging.path(self._name)
            self._f = self._path.open("w", encoding="utf-8")
            self._count = 0
        line = json.dumps(row) if row["text"].isascii() else ""  # escaping as ASCII: 1.8x faster for ASCII
        if not line or "\\u" in line:  # a character is escaped: write it as UTF-8 (ASCII escapes alike)
            line = json.dumps(row, ensure_ascii=False)
        line += "\n"
        if len(line) * 4 > self.longest_line:  # at most 4 UTF-8 bytes a character: encode only if it could be longer
            self.longest_line = max(self.longest_line, len(line.encode("utf-8")))
        self._f.write(line)
        self._count += 1
        if self._count >= self.per_file:
            self.close()

    def close(self) -> None:
        if self._f is None:
            return
        self._f.close()
        digest = hashlib.sha256(self._path.read_bytes()).hexdigest()
        self.files.append({"file": self._name, "documents": self._count, "sha256": digest})
        self._f = None

    def publish(self, manifest: dict[str, Any], publication: Publication | None = None) -> None:
        """Replace the last curation (documents, dropped samples, skipped.log, data card, manifest) with
        the staged files and `manifest`, now or when `publication` publishes."""
        self.staging.publish_in(publication, REPLACES, manifest)

    def discard(self) -> None:
        """Remove what this (or an interrupted earlier) curation staged."""
        if self._f is not None:
            self._f.close()
            self._f = None
        self.staging.discard()


def eval_grams(cfg: CurateConfig, data: CorpusConfig) -> np.ndarray:
    """N-gram hashes of the evaluation texts: curate.eval_texts, or the corpus's validation split."""
    if not cfg.decontaminate:
        return np.zeros(0, dtype=np.uint64)
    texts = read_documents(CorpusConfig(corpus=cfg.eval_texts)) if cfg.eval_texts else split_documents(data, "val")
    return eval_ngrams((d.text for d in texts), cfg.decontam_ngram)


def build_local_steps(cfg: CurateConfig, data: CorpusConfig, grams: np.ndarray | Path) -> LocalSteps:
    """The per-document steps in order: normalise, language, quality, decontaminate, PII (then dedup
    keys). Language runs before quality, as in FineWeb: the Gopher stop-word rule is English-only.
    `grams` are `eval_grams`, or an .npy file of them that exists by the time the first batch arrives."""
    steps: list[Step] = []
    if cfg.normalize.enabled:
        steps.append(Normalize(cfg.normalize))
    steps.append(Language(cfg.languages.split(",") if cfg.languages else [], cfg.min_language_score))
    if cfg.quality.enabled:
        steps.append(Quality(cfg.quality))
    if cfg.decontaminate:
        steps.append(
            Decontaminate(
                grams, cfg.decontam_ngram, cfg.decontam_min_shared, skip_split=None if cfg.eval_texts else data
            )
        )
    if cfg.pii:
        steps.append(RedactPII())
    dedup = Deduplicate(cfg.dedup) if cfg.dedup.exact or cfg.dedup.near else None
    return LocalSteps(steps, dedup, GroupTermCounter())


def step_names(cfg: CurateConfig) -> list[str]:
    """The names of the steps `build_local_steps` builds, in order, without building them."""
    flags = [
        (Normalize.name, cfg.normalize.enabled),
        (Language.name, True),
        (Quality.name, cfg.quality.enabled),
        (Decontaminate.name, cfg.decontaminate),
        (RedactPII.name, cfg.pii),
    ]
    return [name for name, on in flags if on]


def _years(meta: dict) -> int | None:
    year = meta.get("year")
    if isinstance(year, int):
        return year
    date = meta.get("date")
    if isinstance(date, str) and date[:4].isdigit():
        return int(date[:4])
    return None


class _PerSource:
    """Documents and bytes per source, before and after curation, and the date range seen."""

    def __init__(self, sources: list[SourceConfig]) -> None:
        self.default = sources[0].name
        self.rows = {
            s.name: {"documents_in": 0, "bytes_in": 0, "documents_out": 0, "bytes_out": 0, "train_bytes_out": 0}
            for s in sources
        }
        self.years: list[int] = []
        self.train_year_bytes: Counter[int] = Counter()
        """Training-split bytes per document year: what the knowledge cutoff is derived from."""
        self.train_undated_bytes = 0
        self.group_terms = GroupTermCounter()
        """Mentions of social groups in the training split (the data side of the bias report)."""
        self.mix = MixTally()
        """Each kept training document's mix draw and size: the achieved mix, without a re-read."""

    def name(self, doc: Document) -> str:
        return doc.metadata.get("source") or self.default

    def seen(self, doc: Document, size: int) -> None:
        row = self.rows[self.name(doc)]
        row["documents_in"] += 1
        row["bytes_in"] += size

    def kept(self, doc: Document, size: int, split: str, mentions: np.ndarray | None, num_words: int) -> None:
        row = self.rows[self.name(doc)]
        row["documents_out"] += 1
        row["bytes_out"] += size
        row["train_bytes_out"] += size if split == "train" else 0
        year = _years(doc.metadata)
        if year is not None:
            self.years = [min(self.years[0], year), max(self.years[1], year)] if self.years else [year, year]
        if split == "train":
            self.mix.add(self.name(doc), doc.id, size)
            if mentions is not None:
                self.group_terms.add_mentions(mentions, num_words)
            if year is None:
                self.train_undated_bytes += size
            else:
                self.train_year_bytes[year] += size


def write_dropped(totals: list[StepStats], at: Callable[[str], Path]) -> None:
    """Each step's samples of dropped documents as dropped/<step>.jsonl, at the path `at` gives a name."""
    for st in totals:
        path = at(f"dropped/{st.name}.jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for sample in st.samples:
                f.write(json.dumps(sample, ensure_ascii=False) + "\n")


def nothing_kept(read: ReadStats, totals: list[StepStats], out_dir: Path) -> str:
    """The one-line error of a curation that kept no document: what each step dropped, and why."""
    counts = "; ".join(
        f"{st.name} dropped {sum(st.dropped.values()):,}"
        + (f" ({', '.join(f'{k} {v:,}' for k, v in st.dropped.most_common(3))})" if st.dropped else "")
        for st in totals
        if st.dropped
    )
    skipped = f"{read.num_skipped:,} input{'s' * (read.num_skipped > 1)} skipped as unreadable"
    read_part = f", {skipped}" if read.num_skipped else ""
    return (
        f"curation kept 0 of {read.num_documents:,} documents{read_part}: {counts or 'no step saw a document'}; "
        f"samples in {out_dir / 'dropped'}; loosen the step that dropped them (kiln curate --help, curate.*) "
        "or check the corpus"
    )


def curate(
    data: CorpusConfig, cfg: CurateConfig, out_dir: Path, publication: Publication | None = None
) -> dict[str, Any]:
    """Run every step over the corpus; write documents, manifest, dropped samples, mix and data card
    (the documents, manifest and card replace the last ones now, or when `publication` publishes)."""
    t0 = time.perf_counter()
    sources = sources_of(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    workers = resolve_workers(cfg.workers)
    totals = [StepStats(n) for n in step_names(cfg)]
    dedup = Deduplicate(cfg.dedup) if cfg.dedup.exact or cfg.dedup.near else None
    dedup_stats = StepStats("dedup")
    per_source = _PerSource(sources)
    writer = _JsonlShards(out_dir, cfg.shard_documents)  # the last curation stays until this one has succeeded
    skipped_log = writer.staging.path(SKIPPED_LOG)
    grams_file = out_dir / ".eval_grams.npy"  # with workers: they start (and load their models) while
    grams = eval_grams(cfg, data) if workers <= 1 else grams_file  # this process finds the eval n-grams
    try:
        with (
            StepPool(partial(build_local_steps, cfg, data, grams), workers) as pool,
            skipped_log.open("w", encoding="utf-8") as log,
        ):
            if workers > 1:
                grams_file.unlink(missing_ok=True)  # a new file: never written through a link left there
                np.save(grams_file, eval_grams(cfg, data))
            read_stats = ReadStats(log=log)
            bar = tqdm(
                desc=f"curate ({workers} worker{'s' * (workers > 1)})",
                unit="B",
                unit_scale=True,
                dynamic_ncols=True,
                mininterval=0.5,
            )

            def counted(docs):
                for doc in docs:
                    size = utf8_size(doc.text)
                    per_source.seen(doc, size)
                    bar.update(size)
                    yield doc

            stream = batches(counted(read_documents(data, read_stats)), cfg.batch_bytes)
            for results, stats in pool.map(stream):
                for total, st in zip(totals, stats):
                    total.merge(st)
                for doc, keys, mentions, num_words in results:
                    if dedup is not None and not dedup.decide(doc, keys, dedup_stats):
                        continue
                    writer.write({"id": doc.id, "text": doc.text, **doc.metadata})
                    per_source.kept(doc, utf8_size(doc.text), split_of(doc.id, data), mentions, num_words)
            bar.close()
            writer.close()
    except BaseException:
        writer.discard()
        raise
    finally:
        grams_file.unlink(missing_ok=True)
    if dedup is not None:
        totals.append(dedup_stats)
    rows = per_source.rows
    if not sum(r["documents_out"] for r in rows.values()):  # the last curation stays; this one's samples
        refused = out_dir / REFUSED  # go where they cannot be taken for its
        for link in (refused, refused / "dropped"):  # a link left there (a run from someone else): never followed
            if link.is_symlink():
                link.unlink()
        for old in [*refused.glob("dropped/*.jsonl"), refused / SKIPPED_LOG]:
            old.unlink(missing_ok=True)
        refused.mkdir(exist_ok=True)  # even with no step to drop anything (an empty corpus)
        write_dropped(totals, lambda name: refused / name)
        rename_synced(skipped_log, refused / SKIPPED_LOG)
        writer.discard()
        raise KilnError(nothing_kept(read_stats, totals, refused))
    write_dropped(totals, writer.staging.path)
    manifest: dict[str, Any] = {
        "format": CURATED_FORMAT,
        "source": data.sources or data.corpus,
        "sources": [{**asdict(s), "licence": s.licence or cfg.licence, **rows[s.name]} for s in sources],
        "documents_in": read_stats.num_documents,
        "documents_out": sum(r["documents_out"] for r in rows.values()),
        "bytes_in": sum(r["bytes_in"] for r in rows.values()),
        "bytes_out": sum(r["bytes_out"] for r in rows.values()),
        "read": {
            "invalid_utf8_bytes": read_stats.num_invalid_bytes,
            "skipped": read_stats.num_skipped,
            "skipped_examples": read_stats.skipped[:20],
            "log": SKIPPED_LOG,
        },
        "steps": [st.as_dict() for st in totals],
        "largest_duplicate_clusters": dedup.clusters.most_common(10) if dedup else [],
        "years": per_source.years or None,
        "train_year_bytes": {str(y): n for y, n in sorted(per_source.train_year_bytes.items())},
        "train_undated_bytes": per_source.train_undated_bytes,
        "group_terms": per_source.group_terms.as_dict(),
        "files": writer.files,
        "longest_line_bytes": writer.longest_line,
        "mix": plan_mix(sources, {n: r["train_bytes_out"] for n, r in rows.items()}),
        "workers": workers,
    }
    manifest["mix"] = per_source.mix.achieved(manifest["mix"])
    manifest["wall_s"] = round(time.perf_counter() - t0, 3)
    write_data_card(manifest, data, cfg, writer.staging.path)
    writer.publish(manifest, publication)
    if read_stats.num_skipped:
        print(
            f"curate: skipped {read_stats.num_skipped} unreadable input(s); see {out_dir / SKIPPED_LOG}",
            file=sys.stderr,
        )
    return manifest
