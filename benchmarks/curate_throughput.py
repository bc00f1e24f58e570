"""Curation throughput (MB/s, MB/s per core) on a generated web-like corpus, and what each step caught.

    python benchmarks/curate_throughput.py                     # 200 MB, 1 and 2 workers
    python benchmarks/curate_throughput.py --mb 50 --workers 1,2,4

The corpus (kiln.curate.synthetic: English prose sampled from the built-in corpus's word
frequencies, with planted exact and near duplicates, boilerplate, junk, other languages and PII) is
generated once into --cache. Every run uses the full default step list, dedup included. Reported:
wall time, MB/s, MB/s per core (cores busy = min(workers + 1, machine cores): the main process reads,
deduplicates and writes), peak RSS, and per planted kind the fraction of documents removed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

from kiln.corpus import CorpusConfig
from kiln.curate.config import CurateConfig
from kiln.curate.curated import CuratedSet
from kiln.curate.pipeline import curate
from kiln.curate.synthetic import cached_web_corpus


def _kinds(folder: Path) -> Counter:
    return Counter(d.metadata["kind"] for d in CuratedSet(folder).documents(CorpusConfig(), apply_mix=False))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=200, help="corpus size in MB of text")
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts to time")
    ap.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "kiln-bench-web"), help="corpus folder")
    args = ap.parse_args()
    t = time.perf_counter()
    corpus, kinds = cached_web_corpus(Path(args.cache), args.mb)
    print(f"corpus: {corpus} ({time.perf_counter() - t:.0f} s to find or generate): {kinds}")
    planted = Counter(kinds)
    cores = os.cpu_count() or 1
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        out = Path(tempfile.mkdtemp(prefix="kiln-curate-bench-"))
        t = time.perf_counter()
        manifest = curate(CorpusConfig(corpus=str(corpus)), CurateConfig(workers=workers), out)
        wall = time.perf_counter() - t
        mb = manifest["bytes_in"] / 1e6
        busy = min(workers + (workers > 1), cores)
        rss = (
            max(
                resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            )
            / 1024
        )
        kept = _kinds(out)
        removed = {k: round(1 - kept.get(k, 0) / n, 3) for k, n in sorted(planted.items())}
        row = {
            "workers": workers,
            "mb": round(mb, 1),
            "wall_s": round(wall, 1),
            "mb_per_s": round(mb / wall, 2),
            "cores_busy": busy,
            "mb_per_s_per_core": round(mb / wall / busy, 2),
            "peak_rss_mb": round(rss),
            "documents_in": manifest["documents_in"],
            "documents_out": manifest["documents_out"],
            "removed_fraction_by_kind": removed,
        }
        rows.append(row)
        print(json.dumps(row))
        for s in manifest["steps"]:
            notes = {k: v for k, v in s["notes"].items() if s["step"] == "pii"}
            print(
                f"  {s['step']:<14} in {s['in']:>7,}  dropped {s['dropped']:>6,}  {s['dropped_by_reason']} "
                f"{notes or ''}"
            )
        shutil.rmtree(out)
    print(json.dumps({"machine_cores": cores, "runs": rows}))


if __name__ == "__main__":
    main()
