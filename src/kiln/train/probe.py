"""Timing the training step of a config on random tokens: what the planner sizes a model with.

The step is the trainer's own (`Trainer.train_step`: the objective's loss, accumulation, clipping,
the optimizer) on the config's model and optimizer, in one process, fed random tokens (the time does
not depend on the data). Nothing it does reaches the run: the RNG state is restored afterwards.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import torch
from torch import nn

from kiln.batch import Batch, text_batch
from kiln.models.build import build_model
from kiln.models.registry import build_objective
from kiln.train.optim import make_optimizer
from kiln.train.parallel import Parallel

if TYPE_CHECKING:
    from kiln.runconfig import RunConfig
    from kiln.tokenizer import SpecialIds


class RandomTokens:
    """A loader of random token windows: a step's time does not depend on the data."""

    epoch = 0.0

    def __init__(self, vocab_size: int, batch_size: int, seq_len: int, seed: int = 0, low: int = 0) -> None:
        self.shape, self.low, self.vocab_size = (batch_size, seq_len + 1), low, vocab_size
        self.gen = torch.Generator().manual_seed(seed)

    def next_batch(self) -> Batch:
        data = torch.randint(self.low, self.vocab_size, self.shape, generator=self.gen)
        return text_batch(data[:, :-1], data[:, 1:])

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def step_seconds(
    cfg: RunConfig,
    device: torch.device,
    ids: SpecialIds,
    steps: int = 3,
    clock: Callable[[], float] | None = None,
    compiled: bool = False,
) -> float:
    """Median seconds of `steps` optimizer steps of `cfg` (after one that pays for allocations and
    kernel selection, and with `compiled` for torch.compile's compilation of the step, as the trainer
    compiles it), in one process, on random tokens above the special ids."""
    from kiln.train.trainer import Trainer

    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        model = build_model(cfg.model, device)
        optimizer = make_optimizer(model, cfg, device)
        objective = build_objective(cfg.model, cfg.objective, ids)
        loader = RandomTokens(cfg.model.vocab_size, cfg.train.micro_batch_size, cfg.train.seq_len, low=ids.num_special)
        trainer = Trainer(cfg, model, model, objective, loader, optimizer, Parallel.single(), device, hooks=[])
        if clock is not None:
            trainer.clock = clock
        if compiled:
            trainer.step_model = cast(nn.Module, torch.compile(model))
        times = []
        for _ in range(steps + 1):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t0 = trainer.clock()
            trainer.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(trainer.clock() - t0)
        del trainer, model, optimizer
    return statistics.median(times[1:])
