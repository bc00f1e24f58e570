"""The per-document steps on a pool of worker processes, in stream order, with bounded memory.

The main process reads documents into batches of about `batch_bytes`, hands each batch to a worker
(at most two batches per worker in flight, so memory does not grow with the corpus), and takes the
results back in submission order. Workers run the pure steps and compute the dedup keys and the
group-term mentions of the data card; the main process makes the dedup decisions in stream order.
Batches are cut by the reader, never by the pool, so 1 and N workers produce byte-identical output.
Workers are spawned (not forked): safe when the parent holds threads, and the same on every platform.
`StepPool` starts them when it is made, so they load the language model while the caller prepares
(curate: while it finds the evaluation n-grams, which reach the workers in a file).
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from typing import NamedTuple

import numpy as np

from kiln.curate.groupterms import GroupTermCounter
from kiln.curate.steps import Deduplicate, Step, StepStats
from kiln.curate.wordbatch import chunks
from kiln.curate.words import cache_words, words_of
from kiln.readers import Document


class Passed(NamedTuple):
    """A document every local step kept, with what the main process needs to decide and count it."""

    doc: Document
    keys: tuple
    """`Deduplicate.keys` (None, None without dedup)."""
    mentions: np.ndarray | None
    """`GroupTermCounter.mentions` of its words (None without a counter)."""
    num_words: int


BatchResult = tuple[list[Passed], list[StepStats]]


class LocalSteps:
    """The steps that need no shared state, plus the dedup keys and group-term mentions, applied to
    one batch at a time."""

    def __init__(self, steps: list[Step], dedup: Deduplicate | None, terms: GroupTermCounter | None = None) -> None:
        self.steps, self.dedup, self.terms = steps, dedup, terms

    def process(self, batch: list[Document]) -> BatchResult:
        """Each step over the whole batch in turn (steps are per-document, so the order of the loops
        does not change any result; one step's code and tables stay hot in the cache), then the dedup
        keys and mentions of the documents every step kept."""
        stats = [StepStats(step.name) for step in self.steps]
        docs = batch
        for step, st in zip(self.steps, stats):
            docs = step.run(docs, st)
        cache_words(docs)  # again in vectorised passes for any text a step changed (PII redaction)
        words = [words_of(doc) for doc in docs]
        mentions: list[np.ndarray | None] = [None] * len(docs)
        if self.terms is not None:
            mentions = [row for chunk in chunks(words) for row in self.terms.mentions_many(chunk)]
        keys: list[tuple] = [(None, None)] * len(docs)
        if self.dedup is not None:
            keys = [k for chunk in chunks(words) for k in self.dedup.keys(chunk)]
        out = []
        for doc, w, k, m in zip(docs, words, keys, mentions):
            doc.cache.clear()  # derived views stay in the worker
            out.append(Passed(doc, k, m, len(w)))
        return out, stats


_local: LocalSteps | None = None  # one per worker process, set by _init


def _init(make: Callable[[], LocalSteps]) -> None:
    global _local
    _local = make()


def _ready() -> None:
    """A no-op task: submitting one makes the pool spawn a worker (which runs `_init`)."""


def _process(batch: list[Document]) -> BatchResult:
    assert _local is not None, "worker not initialised"
    return _local.process(batch)


def resolve_workers(workers: int) -> int:
    return workers if workers > 0 else (os.cpu_count() or 1)


def batches(docs: Iterable[Document], batch_bytes: int, batch_docs: int = 2000) -> Iterator[list[Document]]:
    """Consecutive documents, about `batch_bytes` of text per batch."""
    batch, size = [], 0
    for doc in docs:
        batch.append(doc)
        size += len(doc.text)
        if size >= batch_bytes or len(batch) >= batch_docs:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class StepPool:
    """`LocalSteps.process` over a stream of batches, results in order: on `workers` spawned processes,
    or in this process when workers <= 1. The processes start when the pool is made, so they load
    their models (the language identifier: ~0.7 s) while the caller is still preparing; use it as a
    context manager."""

    def __init__(self, make: Callable[[], LocalSteps], workers: int) -> None:
        self.workers = workers
        self.pool: ProcessPoolExecutor | None = None
        if workers <= 1:
            self.local = make()
            return
        ctx = multiprocessing.get_context("spawn")
        self.pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init, initargs=(make,))
        try:
            for _ in range(workers):  # each submit to a pool with no idle process spawns one
                self.pool.submit(_ready)
        except BaseException:
            self.pool.shutdown(cancel_futures=True)
            raise

    def __enter__(self) -> StepPool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)

    def map(self, stream: Iterable[list[Document]]) -> Iterator[BatchResult]:
        if self.pool is None:
            for batch in stream:
                yield self.local.process(batch)
            return
        pending: deque[Future] = deque()  # at most two batches per worker in flight
        for batch in stream:
            pending.append(self.pool.submit(_process, batch))
            if len(pending) >= 2 * self.workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
