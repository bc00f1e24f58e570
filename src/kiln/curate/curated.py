"""The curated set: a `kiln curate` output folder, described by its manifest.

Data flows one way: readers -> corpus -> curation -> curated set. Later stages read a run's curated
set through `CuratedSet`; `read_split` names which of the two a run reads (its curated set when
curation ran, else the raw corpus). The training mix is part of the set's description
(manifest.json's "mix"), applied when its training split is read.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from kiln.corpus import CURATED_FORMAT, CorpusConfig, split_documents, split_of
from kiln.curate.mix import copies_of
from kiln.errors import KilnError
from kiln.readers import Document, ReadStats, read_jsonl
from kiln.rundir import MANIFEST, RunDir, listed_file

if TYPE_CHECKING:
    from kiln.runconfig import RunConfig


class CuratedSet:
    """The JSONL files of a curated folder, in order, and its mix (epochs per source)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        try:
            self.manifest: dict[str, Any] = json.loads((self.root / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise KilnError(f"{self.root} holds no readable curated manifest ({e}); re-run `kiln curate`") from None
        self.files = [listed_file(self.root, f.get("file"), self.root / MANIFEST) for f in self.manifest["files"]]
        self.mix: dict[str, dict] = self.manifest.get("mix") or {}
        self.longest_line = int(self.manifest.get("longest_line_bytes", 0))
        """What curation wrote may be longer than the raw document it came from (JSON escaping,
        metadata): every line it wrote is read back, whatever data.max_document_bytes says."""

    @staticmethod
    def exists(root: Path) -> bool:
        try:
            return json.loads((Path(root) / MANIFEST).read_text()).get("format") == CURATED_FORMAT
        except (OSError, json.JSONDecodeError, AttributeError):
            return False

    def _source(self, doc: Document) -> str:
        return doc.metadata.get("source") or next(iter(self.mix))

    def documents(
        self, split: CorpusConfig, stats: ReadStats | None = None, apply_mix: bool = True
    ) -> Iterator[Document]:
        """Every document, the training ones repeated by the mix; `split` holds the split's settings
        (val_fraction, split_seed) and the document size limit (raised to the longest line written)."""
        stats = stats if stats is not None else ReadStats()
        limit = max(split.max_document_bytes, self.longest_line)
        epochs = {name: p["epochs"] for name, p in self.mix.items()}
        if not apply_mix or not self.mix or all(e == 1 for e in epochs.values()):
            for path in self.files:
                yield from read_jsonl(path, "text", stats, limit)
            return
        for k in range(max(math.ceil(e) for e in epochs.values())):
            for path in self.files:
                for doc in read_jsonl(path, "text", stats, limit):
                    if split_of(doc.id, split) == "val":
                        if k == 0:
                            yield doc
                    elif copies_of(doc.id, epochs[self._source(doc)]) > k:
                        yield doc

    def split_documents(self, split: CorpusConfig, name: str, stats: ReadStats | None = None) -> Iterator[Document]:
        return (doc for doc in self.documents(split, stats) if split_of(doc.id, split) == name)


def curated_set(cfg: RunConfig, run: RunDir) -> CuratedSet | None:
    """The run's curated set when curation is on and has run: what the later stages read instead of
    the raw corpus (already cut to data.max_documents; its mix may repeat documents past it)."""
    return CuratedSet(run.curated) if cfg.curate.enabled and CuratedSet.exists(run.curated) else None


def read_split(
    cfg: RunConfig, run: RunDir, split: Literal["train", "val"], stats: ReadStats | None = None
) -> Iterator[Document]:
    """One split's documents, from the curated set or else the raw corpus."""
    curated = curated_set(cfg, run)
    return curated.split_documents(cfg.data, split, stats) if curated else split_documents(cfg.data, split, stats)


def heldout_documents(cfg: RunConfig, run: RunDir) -> list[tuple[str, str]]:
    """The validation split as (id, text) pairs: what kiln's own tasks are made from."""
    return [(d.id, d.text) for d in read_split(cfg, run, "val")]
