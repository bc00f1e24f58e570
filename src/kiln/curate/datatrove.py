"""kiln's curation steps on datatrove's executors, for corpora that need more than one machine.

kiln does not schedule work across machines. datatrove (`pip install "kiln[curate]"`) is the field's
engine for that: its executors run a pipeline of steps as many tasks, locally, on Slurm or on Ray,
and its MinHash stages deduplicate across all tasks. `KilnSteps` is a datatrove pipeline step that
applies kiln's per-document steps (normalise, language, quality, decontaminate, PII) with the
same configuration and the same code as `kiln curate`, counting every drop reason in datatrove's
stats. Deduplication across machines is datatrove's job (its MinHash stages after this step);
within one machine `kiln curate` does it. The output is JSONL that `kiln tokenize` reads.

    from datatrove.executor import SlurmPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from kiln.curate.datatrove import KilnSteps

    SlurmPipelineExecutor(pipeline=[JsonlReader("s3://raw/"), KilnSteps(CurateConfig(), CorpusConfig()),
                                    JsonlWriter("s3://curated/")], tasks=1000, time="4:00:00",
                          partition="cpu", logging_dir="logs/").run()
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import numpy as np

from kiln.corpus import CorpusConfig, Document
from kiln.curate.config import CurateConfig, DedupConfig
from kiln.curate.pipeline import build_local_steps, eval_grams
from kiln.errors import KilnError

try:
    from datatrove.data import Document as DatatroveDocument
    from datatrove.pipeline.base import PipelineStep
except ImportError:  # the extra is not installed: a clear error when the step is used
    PipelineStep = object
    DatatroveDocument = None


class KilnSteps(PipelineStep):
    """kiln's per-document curation steps as one datatrove pipeline step."""

    name = "kiln curation steps"
    type = "kiln"

    def __init__(
        self, cfg: CurateConfig, data: CorpusConfig, grams: np.ndarray | None = None, batch_docs: int = 256
    ) -> None:
        if DatatroveDocument is None:
            raise KilnError('datatrove is not installed; pip install "kiln[curate]"')
        super().__init__()
        # dedup is datatrove's MinHash stages' job across tasks; kiln's keys would go unused here
        self.cfg = replace(cfg, dedup=DedupConfig(exact=False, near=False))
        self.data = data
        self.grams = eval_grams(cfg, data) if grams is None else grams
        self.batch_docs = batch_docs

    def _flush(self, local, batch: list[Document]) -> Iterator[DatatroveDocument]:
        with self.track_time(unit="batch"):
            results, stats = local.process(batch)
        for st in stats:
            self.stat_update(f"{st.name}/in", value=st.num_in)
            for reason, n in st.dropped.items():
                self.stat_update(f"{st.name}/dropped/{reason}", value=n)
            for note, n in st.notes.items():
                self.stat_update(f"{st.name}/{note}", value=n)
        for passed in results:
            self.stat_update("kept")
            doc = passed.doc
            yield DatatroveDocument(text=doc.text, id=doc.id, metadata=doc.metadata)

    def run(self, data, rank: int = 0, world_size: int = 1):
        local = build_local_steps(self.cfg, self.data, self.grams)
        batch: list[Document] = []
        for doc in data:
            batch.append(Document(id=str(doc.id), text=doc.text, metadata=dict(doc.metadata)))
            if len(batch) >= self.batch_docs:
                yield from self._flush(local, batch)
                batch = []
        if batch:
            yield from self._flush(local, batch)
