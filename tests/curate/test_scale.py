"""Curation memory stays flat as the corpus grows past many batches."""

import json
import subprocess
import sys

import pytest

from kiln.curate.synthetic import write_web_corpus

CURATE_AND_REPORT_RSS = """
import json, resource, sys
from pathlib import Path
from kiln.corpus import CorpusConfig
from kiln.curate.pipeline import curate
from kiln.curate.config import CurateConfig
m = curate(CorpusConfig(corpus=sys.argv[1]), CurateConfig(batch_bytes=500_000), Path(sys.argv[2]))
print(json.dumps({"rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "bytes_in": m["bytes_in"]}))
"""


def _peak_rss(corpus, out) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", CURATE_AND_REPORT_RSS, str(corpus), str(out)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # ~30 s: run by .ci/run after the default suite
def test_peak_memory_does_not_grow_with_corpus_size(tmp_path):
    write_web_corpus(tmp_path / "small", 4_000_000, seed=1)
    write_web_corpus(tmp_path / "large", 16_000_000, seed=1)
    small = _peak_rss(tmp_path / "small", tmp_path / "out_small")
    large = _peak_rss(tmp_path / "large", tmp_path / "out_large")
    grown_mb = (large["rss_kb"] - small["rss_kb"]) / 1024
    corpus_grown_mb = (large["bytes_in"] - small["bytes_in"]) / 1e6
    print(
        f"peak RSS {small['rss_kb'] / 1024:.0f} -> {large['rss_kb'] / 1024:.0f} MB "
        f"for {corpus_grown_mb:.0f} MB more text"
    )
    # 24 batches more: holding the text would add >= 12 MB; the dedup index adds well under 2 MB
    assert corpus_grown_mb > 11 and grown_mb < 4
