"""Downstream tasks scored by log-likelihood: multiple choice and cloze, with lm-eval-harness's metrics.

A task is a list of items. A multiple-choice item has one continuation per choice (each after its
own context: most tasks share one, Winogrande's partial scoring varies it) and a gold index; a
cloze item has one continuation, the answer. Each continuation is scored once by the family's
`score` (models/spec.py): its summed log-likelihood `ll` in nats and whether greedy decoding would
write it. From those:

- `acc`: the choice with the highest `ll` is the gold one (lm-eval-harness `acc`; OLMo `acc_raw`);
  for a cloze item, every answer token is the model's top token (lm-eval's LAMBADA `acc`, `is_greedy`).
- `acc_norm`: the highest `ll / characters of the continuation` (lm-eval-harness `acc_norm`, which
  divides by `len(continuation)` in characters, leading space included; OLMo `acc_per_char`).
  Ties go to the first choice, as numpy's argmax does in both.
- `centered`: `(primary - chance) / (1 - chance)` with chance the mean of 1/choices over the items
  (0 for cloze): 0 at chance, 1 perfect, the per-task figure DCLM's CORE (and nanochat) average.
- `bpb`: bits per UTF-8 byte of the gold continuation, `-ll / (ln 2 x bytes)`, averaged over items
  (OLMo's `bpb`): it keeps moving while a small model's accuracy sits at chance.
- `core`: the mean of `centered` over a suite's tasks.

Context and continuation are tokenized separately (continuations start with their space, so the
boundary is a natural one for byte-level BPE), as OLMo's in-loop evaluator does; a context too long
for the model loses its start.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn
from tqdm import tqdm

from kiln.models.spec import FamilySpec, Request, Scored
from kiln.tokenizer import SpecialIds


@dataclass(frozen=True)
class Item:
    contexts: tuple[str, ...]
    """One context per continuation (most tasks repeat the same one)."""
    continuations: tuple[str, ...]
    """The choices (multiple choice) or the one answer (cloze)."""
    gold: int = 0


@dataclass(frozen=True)
class Task:
    name: str
    kind: Literal["choice", "cloze"]
    items: tuple[Item, ...]
    primary: Literal["acc", "acc_norm"] = "acc"
    """The figure `centered` is computed from (the source's own choice, e.g. OLMo's primary metric)."""
    source: str = ""
    """Where the items come from, for the table and the model card."""

    @property
    def chance(self) -> float:
        if self.kind == "cloze" or not self.items:
            return 0.0
        return sum(1 / len(item.continuations) for item in self.items) / len(self.items)


def task_metrics(task: Task, scored: Sequence[Sequence[Scored]]) -> dict[str, Any]:
    """The task's figures from each item's scored continuations (in the items' order)."""
    acc = acc_norm = bits = 0.0
    for item, marks in zip(task.items, scored, strict=True):
        lls = [m.logprob for m in marks]
        if task.kind == "cloze":
            acc += marks[0].greedy
            acc_norm += marks[0].greedy
        else:
            acc += _argmax(lls) == item.gold
            acc_norm += _argmax([ll / max(len(c), 1) for ll, c in zip(lls, item.continuations)]) == item.gold
        gold_bytes = max(len(item.continuations[item.gold].encode()), 1)
        bits += -lls[item.gold] / (math.log(2) * gold_bytes)
    n = max(len(task.items), 1)
    figures: dict[str, Any] = {
        "task": task.name,
        "kind": task.kind,
        "items": len(task.items),
        "acc": acc / n,
        "acc_norm": acc_norm / n,
        "primary": task.primary,
        "chance": task.chance,
        "bpb": bits / n,
        "source": task.source,
    }
    figures["centered"] = (figures[task.primary] - task.chance) / (1 - task.chance)
    return figures


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))


def core_mean(results: Sequence[dict[str, Any]]) -> float | None:
    """The CORE-style suite figure: the mean centered accuracy over the tasks (None with no task
    scored: JSON has no NaN)."""
    return sum(r["centered"] for r in results) / len(results) if results else None


ITEMS_PER_CALL = 64
"""Items scored per call of the family's `score` (its batches span items), and per progress tick."""


def score_task(
    task: Task,
    spec: FamilySpec,
    model: nn.Module,
    encode: Any,
    ids: SpecialIds,
    precision: str,
    max_len: int,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every item of `task` with `model` and return its figures (task_metrics) plus `seconds`.
    `encode(text) -> ids` tokenizes (no special tokens)."""
    t0 = time.perf_counter()
    cache: dict[str, list[int]] = {}

    def ids_of(text: str) -> list[int]:
        if text not in cache:
            cache[text] = list(encode(text))
        return cache[text]

    was_training = model.training
    model.eval()
    scored: list[list[Scored]] = []
    bar = tqdm(total=len(task.items), desc=task.name, unit="item", disable=not progress, leave=False)
    for start in range(0, len(task.items), ITEMS_PER_CALL):
        chunk = task.items[start : start + ITEMS_PER_CALL]
        requests: list[Request] = [
            (ids_of(ctx), ids_of(cont)) for item in chunk for ctx, cont in zip(item.contexts, item.continuations)
        ]
        flat = spec.score(model, requests, ids, precision, max_len)
        for item in chunk:
            scored.append(flat[: len(item.continuations)])
            flat = flat[len(item.continuations) :]
        bar.update(len(chunk))
    bar.close()
    model.train(was_training)
    return {**task_metrics(task, scored), "seconds": time.perf_counter() - t0}


def results_table(results: Sequence[dict[str, Any]]) -> str:
    """A markdown table of task figures, with the suite's CORE-style mean last."""
    lines = [
        "| task | items | acc | acc_norm | primary | chance | centered | gold bpb | seconds |",
        "| --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(
            f"| {r['task']} | {r['items']} | {r['acc']:.4f} | {r['acc_norm']:.4f} | {r['primary']} | "
            f"{r['chance']:.3f} | {r['centered']:+.4f} | {r['bpb']:.3f} | {r.get('seconds', 0):.1f} |"
        )
    mean = core_mean(results)
    if len(results) > 1 and mean is not None:
        lines.append(f"| **mean (CORE-style)** | | | | | | **{mean:+.4f}** | | |")
    return "\n".join(lines) + "\n"
