"""Fine-tuning data as items of fixed-width rows, and the trainer's Loader and ValidationData over them.

Every fine-tuning method turns its file into arrays `inputs` and `targets` of shape (N, R, T): N
items of R rows each (an SFT window is one row; a preference pair is two, chosen then rejected), with
targets of -100 where nothing is scored. A batch takes whole items and flattens their rows, so the
rows of a pair always travel together and the objective finds them at even and odd positions.

The split between training and held-out items is by a hash of each item's content (adding items
never moves the old ones), or a separate file (`finetune.val_data`).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from kiln.batch import Batch, text_batch
from kiln.config import whole
from kiln.errors import KilnError
from kiln.readers import BINARY, file_text
from kiln.shards.loader import EpochOrder

IGNORE = -100
"""The target of a position left out of every loss."""

T = TypeVar("T")


def read_jsonl(path: Path, parse: Callable[[dict[str, Any]], T], expected: str) -> list[T]:
    """Each non-empty line of a JSONL file through `parse`; a malformed line is one error naming it."""
    path = Path(path)
    if not path.is_file():
        raise KilnError(f"finetune data {path} is not a file")
    text = file_text(path.read_bytes())
    if text is None:
        raise KilnError(f"finetune data {path} {BINARY}; pass a JSONL text file")
    items = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            items.append(parse(json.loads(line)))
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:  # Recursion: nested too deep
            raise KilnError(f"{path}:{n}: not {expected} ({type(e).__name__}: {str(e)[:200]})") from None
    return items


def string(record: dict[str, Any], key: str, numbers: bool = False) -> str:
    """record[key] as text: a string (or, with `numbers`, a whole number: a class label 0, 1, ...);
    anything else is a malformed row, not its Python form ("None", "['a']", "1.0" beside "1")."""
    value = record[key]
    if isinstance(value, str):
        return value
    if numbers and whole(value):
        return str(value)
    raise TypeError(f"{key} must be {'a string or a whole number' if numbers else 'a string'}, not {value!r:.40}")


def is_held_out(item: Any, fraction: float) -> bool:
    """Whether an item falls in the held-out share, by a hash of its JSON form."""
    digest = hashlib.sha256(json.dumps(item, sort_keys=True).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction


def split_items(items: list[T], fraction: float, held_out: list[T] | None, path: Path) -> tuple[list[T], list[T]]:
    """(training items, held-out items): `held_out` when given (a separate file), else a hashed share
    of `items` (at least one)."""
    if held_out is not None:
        train, val = items, held_out
    else:
        val = [x for x in items if is_held_out(x, fraction)] or items[-1:]
        train = [x for x in items if x not in val]
    if not train or not val:
        raise KilnError(f"{path}: {len(train)} training and {len(val)} held-out items; fine-tuning needs both")
    return train, val


class Rows:
    """Items as (N, R, T) int64 arrays of inputs and targets (targets -100 where not scored)."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray) -> None:
        assert inputs.shape == targets.shape and inputs.ndim == 3, (inputs.shape, targets.shape)
        self.inputs, self.targets = inputs, targets

    def __len__(self) -> int:
        return len(self.inputs)

    @property
    def rows_per_item(self) -> int:
        return self.inputs.shape[1]

    def take(self, index: list[int] | slice) -> Batch:
        """The chosen items' rows, flattened to (n x R, T)."""
        width = self.inputs.shape[2]
        return text_batch(
            torch.from_numpy(self.inputs[index].reshape(-1, width)),
            torch.from_numpy(self.targets[index].reshape(-1, width)),
        )


def stack_rows(rows: list[list[tuple[list[int], list[int]]]], width: int, pad: int) -> Rows:
    """Items of R (tokens, targets) rows -> Rows padded (or cut) to `width`."""
    n, r = len(rows), len(rows[0])
    inputs = np.full((n, r, width), pad, dtype=np.int64)
    targets = np.full((n, r, width), IGNORE, dtype=np.int64)
    for i, item in enumerate(rows):
        for j, (tok, tgt) in enumerate(item):
            inputs[i, j, : min(len(tok), width)] = tok[:width]
            targets[i, j, : min(len(tgt), width)] = tgt[:width]
    return Rows(inputs, targets)


def items_per_batch(batch_size: int, rows_per_item: int) -> int:
    """Items in a batch of `batch_size` rows (train.micro_batch_size counts rows, so tokens per step
    stay what the trainer counts)."""
    if batch_size % rows_per_item:
        raise KilnError(
            f"train.micro_batch_size={batch_size} must be a multiple of {rows_per_item} (the rows of one item)"
        )
    return batch_size // rows_per_item


class ItemLoader:
    """The trainer's Loader over items: a seeded shuffle per epoch, resumable, rank-sliced."""

    def __init__(self, rows: Rows, batch_size: int, seed: int, rank: int = 0, world_size: int = 1) -> None:
        self.rows, self.seed, self.rank, self.world_size = rows, seed, rank, world_size
        self.per_batch = items_per_batch(batch_size, rows.rows_per_item)
        self.samples_seen = 0
        self.order = EpochOrder(len(rows), seed)

    @property
    def epoch(self) -> float:
        return self.samples_seen / len(self.rows)

    def next_batch(self) -> Batch:
        first = self.samples_seen + self.rank * self.per_batch
        picked = [self.order(first + i) for i in range(self.per_batch)]
        self.samples_seen += self.per_batch * self.world_size
        return self.rows.take(picked)

    def state_dict(self) -> dict[str, Any]:
        return {"samples_seen": self.samples_seen, "seed": self.seed}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.samples_seen = int(state["samples_seen"])


class ItemValidation:
    """Held-out items for the trainer (the interface of ShardValidation), in file order."""

    def __init__(self, rows: Rows) -> None:
        self.rows = rows

    def num_windows(self, seq_len: int, batch_size: int) -> int:
        return len(self.rows) * self.rows.rows_per_item

    def batches(self, seq_len: int, batch_size: int, max_windows: int | None = None) -> Iterator[Batch]:
        per = items_per_batch(batch_size, self.rows.rows_per_item)
        n = len(self.rows)
        if max_windows is not None:
            n = min(n, max(1, math.ceil(max_windows / self.rows.rows_per_item)))
        for start in range(0, n, per):
            yield self.rows.take(slice(start, min(start + per, n)))
