"""Read token shards: a memory-mapped `ShardSet` and the deterministic, resumable `PackedLoader`.

Packing: the shard token stream (documents already separated by bos/eos) is cut into
non-overlapping windows of ``seq_len + 1`` tokens (inputs are the first ``seq_len``, targets the last
``seq_len``). Each epoch visits every window once in an order drawn from ``(seed, epoch)``.

Distribution: the loader walks one global sequence of windows. Each call takes the next
``batch_size * world_size`` of them and gives rank ``r`` the slice ``[r*batch_size, (r+1)*batch_size)``,
so ranks are disjoint and the global token sequence does not depend on the world size. The whole
state is one counter, ``samples_seen``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from kiln.batch import Batch, text_batch
from kiln.config import whole
from kiln.errors import KilnError
from kiln.rundir import MANIFEST, listed_file
from kiln.shards.writer import FORMAT, TOKEN_DTYPES


class ShardSet:
    """A shard directory written by `write_shards`, memory-mapped."""

    def __init__(self, directory: Path) -> None:
        self.directory = Path(directory)
        path = self.directory / MANIFEST
        if not path.exists():
            raise KilnError(f"no shard manifest at {path}; run `kiln tokenize` first or point at a shard directory")
        try:
            self.manifest = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise KilnError(f"shard manifest {path} is corrupt ({e}); re-run `kiln tokenize`") from None
        shards = self.manifest.get("shards") if isinstance(self.manifest, dict) else None
        counted = isinstance(shards, list) and all(
            isinstance(s, dict) and whole(s.get("num_tokens"), 0) for s in shards
        )
        if not counted:
            raise KilnError(f"{path} is not a kiln shard manifest (no list of shards with token counts)")
        if self.manifest.get("format") != FORMAT:
            raise KilnError(f"{path} is not a kiln shard manifest (format {self.manifest.get('format')!r})")
        if self.manifest.get("dtype") not in TOKEN_DTYPES:  # never an object array: no pointers read from a file
            raise KilnError(f"{path}: token dtype {self.manifest.get('dtype')!r} is not one kiln writes {TOKEN_DTYPES}")
        self.dtype = np.dtype(self.manifest["dtype"])
        self.tokens: list[np.ndarray] = []
        for shard in self.manifest["shards"]:
            file = listed_file(self.directory, shard.get("file"), path)
            listed_file(self.directory, shard.get("docs_file"), path)
            expected = shard["num_tokens"] * self.dtype.itemsize
            if not file.exists() or file.stat().st_size != expected:
                raise KilnError(
                    f"shard {file} is missing or truncated (expected {expected} bytes); re-run `kiln tokenize`"
                )
            self.tokens.append(np.memmap(file, dtype=self.dtype, mode="r") if expected else np.zeros(0, self.dtype))

    def max_token(self) -> int:
        """The largest token id in the shards (-1 when empty): one pass over them."""
        return max((int(t.max()) for t in self.tokens if t.size), default=-1)

    @property
    def tokenizer_sha256(self) -> str:
        return self.manifest["tokenizer_sha256"]

    @property
    def num_tokens(self) -> int:
        return self.manifest["num_tokens"]

    def verify(self) -> None:
        """Recompute every shard's sha256 against the manifest."""
        for shard in self.manifest["shards"]:
            digest = hashlib.sha256((self.directory / shard["file"]).read_bytes()).hexdigest()
            if digest != shard["sha256"]:
                raise KilnError(f"shard {shard['file']} fails its checksum; re-run `kiln tokenize`")

    def documents(self) -> Iterator[np.ndarray]:
        """Each stored document's tokens (bos ... eos), in order."""
        for shard, tokens in zip(self.manifest["shards"], self.tokens):
            offsets = np.load(self.directory / shard["docs_file"])
            for start, end in zip(offsets[:-1], offsets[1:]):
                yield np.asarray(tokens[start:end])


class EpochOrder:
    """Sample i of an endless stream -> a window index: epoch i // num_windows visits every window
    once, in an order seeded by (seed, epoch) (or in order without shuffle); the current epoch's order
    is kept, so a step costs no permutation."""

    def __init__(self, num_windows: int, seed: int, shuffle: bool = True) -> None:
        self.num_windows, self.seed, self.shuffle = num_windows, seed, shuffle
        self._cached: tuple[int, np.ndarray] | None = None

    def __call__(self, sample: int) -> int:
        epoch, position = divmod(sample, self.num_windows)
        if self._cached is None or self._cached[0] != epoch:
            order = (
                np.random.default_rng([self.seed, epoch]).permutation(self.num_windows)
                if self.shuffle
                else np.arange(self.num_windows)
            )
            self._cached = (epoch, order)
        return int(self._cached[1][position])


class PackedLoader:
    """Deterministic, resumable (inputs, targets) batches of shape (batch_size, seq_len)."""

    def __init__(
        self,
        shards: ShardSet,
        seq_len: int,
        batch_size: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle: bool = True,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.shards, self.seq_len, self.batch_size = shards, seq_len, batch_size
        self.rank, self.world_size, self.seed, self.shuffle = rank, world_size, seed, shuffle
        per_shard = [max(0, (len(t) - 1) // seq_len) for t in shards.tokens]
        self._starts = np.concatenate([[0], np.cumsum(per_shard)]).astype(np.int64)
        self.num_windows = int(self._starts[-1])
        if self.num_windows == 0:
            raise KilnError(
                f"shards in {shards.directory} hold {shards.num_tokens} tokens, fewer than one sequence of "
                f"{seq_len + 1}; use more text or a shorter train.seq_len"
            )
        self.samples_seen = 0
        self.order = EpochOrder(self.num_windows, seed, shuffle)

    def window(self, index: int) -> np.ndarray:
        """Tokens of window `index` (0 <= index < num_windows): seq_len + 1 of them."""
        shard = int(np.searchsorted(self._starts, index, side="right")) - 1
        offset = (index - int(self._starts[shard])) * self.seq_len
        return self.shards.tokens[shard][offset : offset + self.seq_len + 1]

    def global_window(self, sample: int) -> np.ndarray:
        return self.window(self.order(sample))

    @property
    def epoch(self) -> float:
        return self.samples_seen / self.num_windows

    def next_batch(self) -> Batch:
        """This rank's next micro-batch: inputs and targets, int64, (batch_size, seq_len)."""
        first = self.samples_seen + self.rank * self.batch_size
        rows = np.stack([self.global_window(first + i) for i in range(self.batch_size)]).astype(np.int64)
        self.samples_seen += self.batch_size * self.world_size
        data = torch.from_numpy(rows)
        return text_batch(data[:, :-1], data[:, 1:])

    def state_dict(self) -> dict:
        return {"samples_seen": self.samples_seen, "seed": self.seed, "seq_len": self.seq_len}

    def load_state_dict(self, state: dict) -> None:
        """Continue after `samples_seen` windows. A state saved with another seq_len or seed continues
        at the same count in this loader's order (the trainer's resume check warns about it)."""
        seen = state["samples_seen"]
        if not whole(seen, least=0):
            raise ValueError(f"samples_seen must be a count of windows, not {seen!r}")
        self.samples_seen = seen


def iterate_windows(shards: ShardSet, seq_len: int, batch_size: int, max_windows: int | None = None) -> Iterator[Batch]:
    """Every window in order, once, as batches of inputs and targets; for evaluation.

    With `max_windows`, a fixed subset spread evenly over the whole set (not its first documents), so
    periodic validation sees every part of the split.
    """
    loader = PackedLoader(shards, seq_len, batch_size, shuffle=False)
    if max_windows is None or max_windows >= loader.num_windows:
        indices = np.arange(loader.num_windows)
    else:
        indices = np.linspace(0, loader.num_windows - 1, max_windows).round().astype(np.int64)
    for start in range(0, len(indices), batch_size):
        rows = np.stack([loader.window(int(i)) for i in indices[start : start + batch_size]]).astype(np.int64)
        data = torch.from_numpy(rows)
        yield text_batch(data[:, :-1], data[:, 1:])


class ShardValidation:
    """A shard set as the trainer's validation data: its windows in order, or a spread subset."""

    def __init__(self, shards: ShardSet) -> None:
        self.shards = shards

    def num_windows(self, seq_len: int, batch_size: int) -> int:
        return PackedLoader(self.shards, seq_len, batch_size, shuffle=False).num_windows

    def batches(self, seq_len: int, batch_size: int, max_windows: int | None = None) -> Iterator[Batch]:
        return iterate_windows(self.shards, seq_len, batch_size, max_windows)
