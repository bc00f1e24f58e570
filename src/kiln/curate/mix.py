"""The training mix: per-source weights or epochs, realised when the curated output is read.

Each kept training document of a source with `epochs = e` appears floor(e) times, plus once more
with probability frac(e) decided by a hash of its id (so the mix is deterministic and streams: the
curated files are read once per pass, pass k yielding the documents with more than k copies).
Weights are turned into epochs from the curated sizes: a source of weight w (of W in all) holding
b of the B training bytes gets e = (w / W) * B / b, so the mix keeps the curated size while the
shares follow the weights. Validation documents are never repeated or sampled.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.errors import KilnError
from kiln.readers import Document, ReadStats, read_jsonl

if TYPE_CHECKING:
    from kiln.corpus import CorpusConfig, SourceConfig

MANIFEST = "manifest.json"


def copies_of(doc_id: str, epochs: float) -> int:
    whole = math.floor(epochs)
    u = int.from_bytes(hashlib.blake2b(f"mix:{doc_id}".encode(), digest_size=8).digest(), "big") / 2**64
    return whole + (u < epochs - whole)


def plan_mix(sources: list[SourceConfig], train_bytes: dict[str, int]) -> dict[str, dict]:
    """Epochs per source from its weight (if any source has one) or its own `epochs`."""
    weighted = [s for s in sources if s.weight > 0]
    if weighted and len(weighted) != len(sources):
        raise KilnError(
            "data.sources: give every source a weight, or none (and set epochs instead); "
            f"unweighted: {', '.join(s.name for s in sources if s.weight <= 0)}"
        )
    total_bytes = sum(train_bytes.values())
    total_weight = sum(s.weight for s in sources)
    plan: dict[str, dict[str, Any]] = {}
    for s in sources:
        size = train_bytes.get(s.name, 0)
        if weighted:
            epochs = (s.weight / total_weight) * total_bytes / size if size else 0.0
            target = s.weight / total_weight
        else:
            epochs, target = float(s.epochs), None
        plan[s.name] = {
            "weight": s.weight,
            "epochs": round(epochs, 6),
            "curated_train_bytes": size,
            "target_share": target,
        }
    if not weighted:
        mixed = sum(p["epochs"] * p["curated_train_bytes"] for p in plan.values()) or 1
        for p in plan.values():
            p["target_share"] = p["epochs"] * p["curated_train_bytes"] / mixed
    return plan


def _files(root: Path) -> tuple[list[Path], dict[str, dict]]:
    manifest = json.loads((root / MANIFEST).read_text())
    return [root / f["file"] for f in manifest["files"]], manifest.get("mix") or {}


def _source(doc: Document, mix: dict[str, dict]) -> str:
    return doc.metadata.get("source") or next(iter(mix))


def read_curated(root: Path, cfg: CorpusConfig, stats: ReadStats, apply_mix: bool = True) -> Iterator[Document]:
    """A `kiln curate` output folder: its JSONL files in order, with the training mix applied."""
    from kiln.corpus import split_of

    files, mix = _files(root)
    epochs = {name: p["epochs"] for name, p in mix.items()}
    if not apply_mix or not mix or all(e == 1 for e in epochs.values()):
        for path in files:
            yield from read_jsonl(path, "text", stats, cfg.max_document_bytes)
        return
    passes = max(math.ceil(e) for e in epochs.values())
    for k in range(passes):
        for path in files:
            for doc in read_jsonl(path, "text", stats, cfg.max_document_bytes):
                if split_of(doc.id, cfg) == "val":
                    if k == 0:
                        yield doc
                elif copies_of(doc.id, epochs[_source(doc, mix)]) > k:
                    yield doc


def achieved_mix(root: Path, cfg: CorpusConfig, mix: dict[str, dict]) -> dict[str, dict]:
    """Training bytes per source in the realised mix, and their shares."""
    from kiln.corpus import split_of

    files, _ = _files(root)
    got = {name: 0 for name in mix}
    for path in files:
        for doc in read_jsonl(path, "text", ReadStats(), cfg.max_document_bytes):
            if split_of(doc.id, cfg) == "train":
                name = _source(doc, mix)
                got[name] += copies_of(doc.id, mix[name]["epochs"]) * len(doc.text.encode("utf-8"))
    total = sum(got.values()) or 1
    return {
        name: {**mix[name], "mixed_train_bytes": b, "achieved_share": round(b / total, 4)} for name, b in got.items()
    }
