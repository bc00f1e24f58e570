"""kiln's steps inside a datatrove pipeline (the multi-machine path) keep the same documents as kiln curate."""

import gzip
import json
import random

import pytest

from kiln.corpus import CorpusConfig
from kiln.curate.config import CurateConfig, DedupConfig
from kiln.curate.curated import CuratedSet
from kiln.curate.pipeline import curate
from tests.conftest import make_text
from tests.curate.test_pipeline import FRENCH

pytest.importorskip("datatrove")


def test_datatrove_local_executor_with_two_tasks_matches_kiln_curate(tmp_path):
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter

    from kiln.curate.datatrove import KilnSteps

    rng = random.Random(2)
    raw = tmp_path / "raw"
    raw.mkdir()
    for part in range(2):
        rows = [{"id": f"p{part}-{i}", "text": make_text(rng, 25)} for i in range(20)]
        rows += [
            {"id": f"p{part}-fr", "text": FRENCH},
            {"id": f"p{part}-junk", "text": "Buy now!"},
            {"id": f"p{part}-pii", "text": make_text(rng, 20) + " Write to jane@example.org."},
        ]
        (raw / f"part{part}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = CurateConfig(decontaminate=False, dedup=DedupConfig(exact=False, near=False))
    data = CorpusConfig(corpus=str(raw))
    LocalPipelineExecutor(
        pipeline=[JsonlReader(str(raw)), KilnSteps(cfg, data), JsonlWriter(str(tmp_path / "dt"))],
        tasks=2,
        workers=1,
        logging_dir=str(tmp_path / "logs"),
    ).run()
    got = {}
    for f in sorted((tmp_path / "dt").glob("*.jsonl.gz")):
        for line in gzip.open(f, "rt"):
            row = json.loads(line)
            got[row["id"]] = row["text"]
    curate(data, cfg, tmp_path / "kiln")
    want = {d.id: d.text for d in CuratedSet(tmp_path / "kiln").documents(CorpusConfig())}
    assert got == want and len(want) == 42 and "<EMAIL>" in want["p0-pii"]
