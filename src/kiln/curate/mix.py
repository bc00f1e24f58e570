"""The training mix: per-source weights or epochs, planned here, realised when the curated set is read
(curated.py).

Each kept training document of a source with `epochs = e` appears floor(e) times, plus once more
with probability frac(e) decided by a hash of its id (so the mix is deterministic and streams: the
curated files are read once per pass, pass k yielding the documents with more than k copies).
Weights are turned into epochs from the curated sizes: a source of weight w (of W in all) holding
b of the B training bytes gets e = (w / W) * B / b, so the mix keeps the curated size while the
shares follow the weights. Validation documents are never repeated or sampled.
"""

from __future__ import annotations

import hashlib
import math
from array import array
from typing import TYPE_CHECKING, Any

import numpy as np

from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.corpus import SourceConfig


def mix_draw(doc_id: str) -> float:
    """The document's uniform draw in [0, 1): it gets its fractional extra copy when below frac(e)."""
    return int.from_bytes(hashlib.blake2b(f"mix:{doc_id}".encode(), digest_size=8).digest(), "big") / 2**64


def copies_of(doc_id: str, epochs: float) -> int:
    whole = math.floor(epochs)
    return whole + (mix_draw(doc_id) < epochs - whole)


class MixTally:
    """Each kept training document's draw and size per source, gathered while curation writes them,
    so the achieved mix is counted without reading the output again (16 bytes a document)."""

    def __init__(self) -> None:
        self.docs: dict[str, tuple[array, array]] = {}

    def add(self, source: str, doc_id: str, size: int) -> None:
        draws, sizes = self.docs.setdefault(source, (array("d"), array("q")))
        draws.append(mix_draw(doc_id))
        sizes.append(size)

    def achieved(self, plan: dict[str, dict]) -> dict[str, dict]:
        """`plan` with the training bytes each source contributes once mixed and their shares: what
        `CuratedSet.documents` yields, as `copies_of` decides per document."""
        got = {}
        for name, p in plan.items():
            draws, sizes = self.docs.get(name, (array("d"), array("q")))
            whole = math.floor(p["epochs"])
            u, b = np.frombuffer(draws, dtype=np.float64), np.frombuffer(sizes, dtype=np.int64)
            got[name] = int(whole * b.sum() + b[u < p["epochs"] - whole].sum())
        total = sum(got.values()) or 1
        return {
            name: {**p, "mixed_train_bytes": got[name], "achieved_share": round(got[name] / total, 4)}
            for name, p in plan.items()
        }


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
