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
from typing import TYPE_CHECKING, Any

from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.corpus import SourceConfig


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
