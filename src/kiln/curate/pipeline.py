"""`kiln curate`: raw documents -> normalised, filtered, language-checked, deduplicated,
decontaminated, PII-redacted documents, written as JSONL with a manifest, dropped samples and a data card.

The output folder (``run_dir/curated``) is itself a corpus: `kiln tokenizer` and `kiln tokenize` read
it in place of the raw corpus. Documents keep their ids, so the train/validation split is unchanged.
Documents stream through the steps one at a time; only the dedup index and the decontamination
n-grams grow with the corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from kiln.config import require
from kiln.corpus import CorpusConfig, ReadStats, read_documents, split_documents, split_of
from kiln.curate.datacard import write_data_card
from kiln.curate.dedup import DedupConfig
from kiln.curate.normalize import NormalizeConfig
from kiln.curate.quality import QualityConfig
from kiln.curate.steps import Decontaminate, Deduplicate, Language, Normalize, Quality, RedactPII, Step

MANIFEST = "manifest.json"


@dataclass
class CurateConfig:
    enabled: bool = True
    """Curate before the tokenizer in `kiln run` (and read the curated output in later stages)."""
    languages: str = "en"
    """Comma-separated ISO 639-1 codes to keep; empty keeps every language (still labelled)."""
    min_language_score: float = 0.5
    """Lowest language-ID probability to keep a document of a kept language."""
    pii: bool = True
    """Replace e-mails, phones, IP addresses and card numbers with typed placeholders."""
    decontaminate: bool = True
    """Drop training documents that share an n-gram with the evaluation texts."""
    decontam_ngram: int = 13
    """Words per n-gram for decontamination (GPT-3's 13)."""
    decontam_min_shared: int = 10
    """Drop a training document sharing this many n-grams with the evaluation texts; flag fewer."""
    eval_texts: str = ""
    """Evaluation texts to decontaminate against (a corpus path); empty uses kiln's validation split."""
    licence: str = ""
    """Licence of a user corpus, for the data card (the built-in corpus's is known)."""
    shard_documents: int = 50_000
    """Documents per output JSONL file."""
    normalize: NormalizeConfig = field(default_factory=NormalizeConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    dedup: DedupConfig = field(default_factory=DedupConfig)

    def __post_init__(self) -> None:
        require(self.decontam_ngram >= 3, f"curate.decontam_ngram={self.decontam_ngram} must be >= 3")
        require(self.decontam_min_shared >= 1, "curate.decontam_min_shared must be >= 1")
        require(0 <= self.min_language_score <= 1, "curate.min_language_score must be in [0, 1]")
        require(self.shard_documents > 0, "curate.shard_documents must be positive")


class _JsonlShards:
    """Numbered JSONL files, each published by rename when full; sha256 of each recorded."""

    def __init__(self, out_dir: Path, per_file: int) -> None:
        self.out_dir, self.per_file = out_dir, per_file
        self.files: list[dict] = []
        self._f = None
        self._count = 0

    def write(self, row: dict) -> None:
        if self._f is None:
            self._tmp = self.out_dir / f".documents_{len(self.files):05d}.jsonl.tmp"
            self._f = self._tmp.open("w", encoding="utf-8")
            self._count = 0
        self._f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._count += 1
        if self._count >= self.per_file:
            self.close()

    def close(self) -> None:
        if self._f is None:
            return
        self._f.close()
        final = self.out_dir / self._tmp.name[1:].removesuffix(".tmp")
        os.replace(self._tmp, final)
        self.files.append({"file": final.name, "documents": self._count,
                           "sha256": hashlib.sha256(final.read_bytes()).hexdigest()})
        self._f = None


def build_steps(cfg: CurateConfig, data: CorpusConfig) -> list[Step]:
    steps: list[Step] = []
    if cfg.normalize.enabled:
        steps.append(Normalize(cfg.normalize))
    # language before quality, as in FineWeb: the Gopher stop-word rule is English-specific
    steps.append(Language(cfg.languages.split(",") if cfg.languages else [], cfg.min_language_score))
    if cfg.quality.enabled:
        steps.append(Quality(cfg.quality))
    if cfg.dedup.exact or cfg.dedup.near:
        steps.append(Deduplicate(cfg.dedup))
    if cfg.decontaminate:
        source = CorpusConfig(corpus=cfg.eval_texts) if cfg.eval_texts else None
        texts = (d.text for d in (read_documents(source) if source else split_documents(data, "val")))
        steps.append(Decontaminate(texts, cfg.decontam_ngram, cfg.decontam_min_shared))
    if cfg.pii:
        steps.append(RedactPII())
    return steps


def curate(data: CorpusConfig, cfg: CurateConfig, out_dir: Path) -> dict[str, Any]:
    """Run every step over the corpus; write documents, manifest, dropped samples and the data card."""
    t0 = time.perf_counter()
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in list(out_dir.glob("documents_*.jsonl")) + list(out_dir.glob(MANIFEST)):
        stale.unlink()
    steps = build_steps(cfg, data)
    read_stats = ReadStats()
    writer = _JsonlShards(out_dir, cfg.shard_documents)
    num_bytes_in = num_bytes_out = num_docs_out = 0
    years: list[int] = []
    bar = tqdm(desc="curate", unit="B", unit_scale=True, dynamic_ncols=True, mininterval=0.5)
    for doc in read_documents(data, read_stats):
        size = len(doc.text.encode("utf-8"))
        num_bytes_in += size
        bar.update(size)
        for step in steps:
            if isinstance(step, Decontaminate) and split_of(doc.id, data) == "val":
                continue  # the validation split is the evaluation text itself
            doc = step(doc)
            if doc is None:
                break
        if doc is None:
            continue
        writer.write({"id": doc.id, "text": doc.text, **doc.metadata})
        num_docs_out += 1
        num_bytes_out += len(doc.text.encode("utf-8"))
        if isinstance(doc.metadata.get("year"), int):
            years.append(doc.metadata["year"])
    bar.close()
    writer.close()
    dropped_dir = out_dir / "dropped"
    dropped_dir.mkdir(exist_ok=True)
    for step in steps:
        with (dropped_dir / f"{step.name}.jsonl").open("w", encoding="utf-8") as f:
            for sample in step.stats.samples:
                f.write(json.dumps(sample, ensure_ascii=False) + "\n")
    dedup = next((s for s in steps if isinstance(s, Deduplicate)), None)
    manifest = {
        "format": "kiln-curated-v1",
        "source": data.corpus,
        "documents_in": read_stats.num_documents,
        "documents_out": num_docs_out,
        "bytes_in": num_bytes_in,
        "bytes_out": num_bytes_out,
        "read": {"invalid_utf8_bytes": read_stats.num_invalid_bytes, "skipped": read_stats.num_skipped,
                 "skipped_examples": read_stats.skipped[:20]},
        "steps": [s.stats.as_dict() for s in steps],
        "largest_duplicate_clusters": dedup.clusters.most_common(10) if dedup else [],
        "years": [min(years), max(years)] if years else None,
        "files": writer.files,
        "wall_s": time.perf_counter() - t0,
    }
    (out_dir / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    write_data_card(manifest, data, cfg, out_dir)
    return manifest
