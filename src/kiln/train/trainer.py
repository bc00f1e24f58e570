"""The training loop: one loop for every objective and stage.

The `Trainer` owns steps, gradient accumulation, clipping, the schedule, non-finite step skipping
and rollback, and the metrics of each step. It is built from parts (the model and the module to call,
the objective, a Loader, ValidationData, the optimizer, a checkpointer) and runs hooks after each
step (train/hooks.py: the time budget's plan, validation, task scores, checkpoints). train/build.py
makes the parts from a run directory, for pretraining (shards) or fine-tuning (finetune/parts.py);
anything else (a benchmark) can make its own.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn
from torch.profiler import record_function
from tqdm import tqdm

from kiln.config import replace, to_dict, whole
from kiln.device import autocast
from kiln.errors import KilnError
from kiln.evaluate.loss import validation_loss
from kiln.models.base import TokenModel
from kiln.objectives.base import Batch, Objective
from kiln.train.checkpoint import Checkpointer
from kiln.train.config import TrainConfig
from kiln.train.flops import flops_per_token, forward_matmul_shapes, matmul_params
from kiln.train.hooks import Checkpoint, Hook, Validate
from kiln.train.metrics import MetricsLog
from kiln.train.muon import momentum_at
from kiln.train.optim import lr_at
from kiln.train.parallel import Parallel
from kiln.train.precision import measure_matmul_peak, measure_shape_peak
from kiln.train.signals import StopRequest, stop_on_signals

if TYPE_CHECKING:
    from kiln.runconfig import RunConfig

PEAK_FIRST_S = 0.2
"""Seconds per ceiling (square, model shapes) of the first reading, taken at the first progress line."""
PEAK_SHARE = 0.02
"""The closing reading takes this share of the training time per ceiling (between PEAK_FIRST_S and 1 s)."""


class Loader(Protocol):
    """What the trainer needs of a loader (shards/loader.py's PackedLoader is one)."""

    @property
    def epoch(self) -> float: ...

    def next_batch(self) -> Batch: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class ValidationData(Protocol):
    """What the trainer validates on (shards/loader.py's ShardValidation, finetune/items.py's ItemValidation)."""

    def num_windows(self, seq_len: int, batch_size: int) -> int: ...
    def batches(self, seq_len: int, batch_size: int, max_windows: int | None = None) -> Iterable[Batch]: ...


def accumulation_steps(tc: TrainConfig, world_size: int) -> int:
    """Micro-batches per optimizer step: train.grad_accum_steps, or derived from train.global_batch_size
    so the global batch stays the same at any world size."""
    if not tc.global_batch_size:
        return tc.grad_accum_steps
    per_step = tc.micro_batch_size * world_size
    if tc.global_batch_size % per_step:
        raise KilnError(
            f"train.global_batch_size={tc.global_batch_size} is not a multiple of micro_batch_size x ranks = {per_step}"
        )
    return tc.global_batch_size // per_step


class Trainer:
    """Trains `model` with `objective` on `loader`'s batches to `cfg.train.max_steps`."""

    def __init__(
        self,
        cfg: RunConfig,
        model: TokenModel,
        forward_model: nn.Module,
        objective: Objective,
        loader: Loader,
        optimizer: torch.optim.Optimizer,
        par: Parallel,
        device: torch.device,
        checkpointer: Checkpointer | None = None,
        val: ValidationData | None = None,
        token_bytes: torch.Tensor | None = None,
        metrics: MetricsLog | None = None,
        hooks: list[Hook] | None = None,
        stop: StopRequest | None = None,
        plan: dict[str, Any] | None = None,
        started: float | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.cfg, self.tc = cfg, cfg.train
        self.model, self.forward_model, self.objective, self.loader = model, forward_model, objective, loader
        self.step_model = forward_model  # what train_step calls: torch.compile'd when train.compile
        self.optimizer, self.par, self.device, self.checkpointer = optimizer, par, device, checkpointer
        self.val, self.token_bytes, self.metrics = val, token_bytes, metrics
        self.hooks = [Validate(), Checkpoint()] if hooks is None else hooks
        self.stop = stop if stop is not None else StopRequest()
        self.plan = plan if plan is not None else {}
        """What was planned and why (plan.json), for the summary."""
        self.clock = clock
        """Seconds, for step times and the budget (time.perf_counter; tests give a clock of their own)."""
        self.started = clock() if started is None else started
        self.rank, self.world_size = par.rank, par.world_size
        self.accum = accumulation_steps(self.tc, self.world_size)
        self.step = 0
        self.tokens_seen = 0
        self.lr_scale = 1.0  # lowered by rollbacks after repeated non-finite steps
        self.saved_at: tuple[int, Path] | None = None
        """The step and checkpoint the model's state was last saved to or loaded from (None after a rollback)."""
        self.bad_steps = self.skipped_steps = 0
        self.loss_mean: float | None = None
        self.last_val: dict[str, float] = {}
        self.peak_flops = 0.0  # the MFU ceiling: best of every measurement (see measure_peak)
        self.peaks = {"square": 0.0, "shapes": 0.0}
        """The two ceilings MFU is stated against the larger of: square 1024-class products, and the
        products this model multiplies."""
        self.flops_per_token = flops_per_token(cfg.model, self.tc.seq_len, cfg.objective)
        self.bar: tqdm | None = None

    @property
    def tokens_per_step(self) -> int:
        return self.tc.seq_len * self.tc.micro_batch_size * self.accum * self.world_size

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step over all ranks."""
        return self.tc.micro_batch_size * self.accum * self.world_size

    @property
    def num_val_windows(self) -> int:
        assert self.val is not None, "this trainer has no validation data"
        return self.val.num_windows(self.tc.seq_len, self.tc.micro_batch_size)

    def set_max_steps(self, steps: int, why: str) -> None:
        """A new horizon for the schedule (a hook's plan); printed with its reason."""
        self.cfg = replace(self.cfg, train=replace(self.tc, max_steps=steps))
        self.tc = self.cfg.train
        if self.bar is not None:
            self.bar.total = steps
            self.bar.refresh()
            self.bar.write(why)

    def log(self, record: dict[str, Any], line: str | None = None) -> None:
        """A record for metrics.jsonl (rank 0), and a line for the person watching."""
        if self.metrics is not None:
            self.metrics.write(record)
        if line is not None and self.rank == 0:
            (self.bar.write if self.bar is not None else print)(line)

    def measure_peak(self, precision: str | None = None, seconds: float = 1.0) -> float:
        """The matmul ceiling for MFU (2 x `seconds`, in the precision trained in): the larger of square
        products (the ladder of train/precision.py) and the products this model multiplies at its
        micro-batch; each kept as the best of every measurement (a reading taken while other work
        shares the cores comes out low and would inflate MFU). Stops early on SIGTERM."""
        dtype = torch.bfloat16 if (precision or self.tc.precision) == "bf16" else torch.float32
        stop = lambda: bool(self.stop)  # noqa: E731
        square = measure_matmul_peak(self.device, dtype, seconds, stop=stop)
        shapes = forward_matmul_shapes(self.model, self.tc.micro_batch_size * self.tc.seq_len)
        shaped = measure_shape_peak(self.device, dtype, shapes, seconds, stop=stop)
        for key, value in (("square", square), ("shapes", shaped)):
            self.peaks[key] = max(self.peaks[key], self.par.mean_of(value, self.device))
        self.peak_flops = max(self.peak_flops, *self.peaks.values())
        return self.peak_flops

    def load(self, path: Path) -> None:
        """Continue from checkpoint `path`: weights, optimizer, RNG, loader position, counters."""
        assert self.checkpointer is not None, "this trainer has no checkpointer"
        state = self.checkpointer.load(path, self.model, self.optimizer)
        tokens, lr_scale = state.get("tokens_seen"), state.get("lr_scale", 1.0)
        rate = not isinstance(lr_scale, bool) and isinstance(lr_scale, (int, float)) and 0 < lr_scale <= 1  # not NaN
        if not (whole(tokens, least=0) and isinstance(state.get("loader"), dict) and rate):
            raise KilnError(f"checkpoint {path} has a state.json kiln cannot resume from; use an earlier checkpoint")
        try:
            self.loader.load_state_dict(state["loader"])
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            raise KilnError(
                f"checkpoint {path} has a loader position kiln cannot use ({e!r}); use an earlier one"
            ) from None
        self.step, self.tokens_seen, self.lr_scale = state["step"], state["tokens_seen"], float(lr_scale)
        self.saved_at = (self.step, path)

    def save(self) -> Path:
        assert self.checkpointer is not None, "this trainer has no checkpointer"
        state = {
            "loader": self.loader.state_dict(),
            "tokens_seen": self.tokens_seen,
            "lr_scale": self.lr_scale,
            "world_size": self.world_size,
            "global_batch_size": self.global_batch,
        }
        for hook in self.hooks:
            state.update(hook.state())
        path = self.checkpointer.save(self.step, self.model, self.optimizer, state, to_dict(self.cfg))
        self.saved_at = (self.step, path)
        return path

    def rollback(self) -> int:
        """Back to the last good checkpoint with a lower learning rate (after repeated bad steps)."""
        path = None
        if self.checkpointer is not None:
            self.checkpointer.finish()
            path = self.checkpointer.latest()
        if path is None:
            raise KilnError(
                f"{self.bad_steps} steps in a row had a non-finite loss or gradient and there is no "
                "checkpoint to roll back to; lower train.lr or check the data"
            )
        scale = self.lr_scale * self.tc.rollback_lr_factor
        self.load(path)
        self.lr_scale = scale
        self.saved_at = None  # the state differs from the checkpoint's (its rate)
        self.bad_steps = 0
        return self.step

    def validate(self, max_windows: int | None) -> dict[str, float]:
        """The objective's validation figures ("loss"; "bpb" for causal LMs); all windows when None."""
        assert self.val is not None and self.token_bytes is not None, "this trainer has no validation data"
        batches = self.val.batches(self.tc.seq_len, self.tc.micro_batch_size, max_windows)
        return validation_loss(
            self.objective,
            self.forward_model,
            batches,
            self.token_bytes,
            self.device,
            self.tc.precision,
            final=max_windows is None,
        )

    def _generator(self, micro: int) -> torch.Generator:
        """Seeds the objective's random choices from (seed, step, micro-batch, rank): resumable."""
        key = ((self.tc.seed * 1_000_003 + self.step) * 1009 + micro) * 9973 + self.rank
        return torch.Generator().manual_seed(key % (2**63))

    def train_step(self) -> dict[str, float | None]:
        """One optimizer step over grad_accum_steps micro-batches."""
        tc = self.tc
        lr = (
            tc.lr
            * self.lr_scale
            * lr_at(self.step, tc.max_steps, tc.warmup_steps, tc.schedule, tc.decay_fraction, tc.min_lr_ratio)
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)
            if group.get("momentum_warmup"):  # Muon's momentum warm-up
                group["momentum"] = momentum_at(self.step, group["momentum_peak"], group["momentum_warmup"])
        total_loss = torch.zeros((), device=self.device)
        figures: dict[str, float] = {}
        for micro in range(self.accum):  # the named scopes are what benchmarks/train_throughput.py splits time by
            with record_function("data"):
                batch = self.objective.make_batch(self.loader.next_batch(), self._generator(micro))
                batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with record_function("forward"), autocast(self.device, tc.precision):
                loss, metrics = self.objective.loss(self.step_model, batch)
            with record_function("backward"):
                (loss / self.accum).backward()
            total_loss += loss.detach()
            for k, v in metrics.items():
                figures[k] = figures.get(k, 0.0) + float(v) / self.accum
        max_norm = tc.grad_clip if tc.grad_clip > 0 else math.inf
        with record_function("clip"):
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP: a DTensor
        loss_value = self.par.all_mean(total_loss).item() / self.accum
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm.item())):
            self.optimizer.zero_grad(set_to_none=True)  # skip: no update; the batch is consumed
            self.bad_steps += 1
            self.skipped_steps += 1
            return {"skipped": 1.0, "loss": None, "lr": lr, "grad_norm": None}
        with record_function("optimizer"):
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps = 0
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        return {"loss": loss_value, "lr": lr, "grad_norm": grad_norm.item(), **figures}

    def _loop(self, bar: tqdm, stop: StopRequest) -> float:
        """Steps until max_steps or a stop request; returns the seconds spent in train steps."""
        train_s = 0.0
        while self.step < self.tc.max_steps and not stop:
            t0 = self.clock()
            stats = self.train_step()
            dt = self.clock() - t0
            train_s += dt
            if stats.get("skipped"):
                self.log(
                    {"step": self.step, "skipped_step": True, "skipped_total": self.skipped_steps},
                    f"step {self.step + 1}: non-finite loss or gradient, step skipped ({self.bad_steps} in a row)",
                )
                if self.bad_steps >= self.tc.max_bad_steps:
                    back = self.rollback()
                    self.log(
                        {"step": back, "rollback_to": back, "lr_scale": self.lr_scale},
                        f"rolled back to step {back}; learning rate now x{self.lr_scale:g}",
                    )
                    bar.n = back
                continue
            loss = stats["loss"]
            assert loss is not None  # finite: the step was not skipped
            if self.loss_mean is not None and loss > self.tc.spike_factor * self.loss_mean:
                self.log({"step": self.step, "loss_spike": loss, "loss_mean": self.loss_mean})
            self.loss_mean = loss if self.loss_mean is None else 0.9 * self.loss_mean + 0.1 * loss
            if not self.peak_flops:  # a first reading for the progress line; the end measures longer
                self.measure_peak(seconds=PEAK_FIRST_S)
            tok_s = self.tokens_per_step / dt
            mfu = self.flops_per_token * tok_s / self.peak_flops if self.peak_flops else 0.0
            self.log({"step": self.step, "tokens": self.tokens_seen, **stats, "tokens_per_s": tok_s, "mfu": mfu})
            bar.set_postfix(
                loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.2e}", tok_s=f"{tok_s:,.0f}", mfu=f"{mfu:.1%}"
            )
            bar.update(1)
            for hook in self.hooks:
                hook.after_step(self, dt)
        return train_s

    def fit(self) -> dict[str, Any]:
        """Run to train.max_steps; return the figures for summary.json. SIGINT/SIGTERM stop at the
        next step boundary with a checkpoint (then KeyboardInterrupt)."""
        self.model.train()
        start_step = self.step
        self.bar = bar = tqdm(
            total=self.tc.max_steps,
            initial=self.step,
            desc="train",
            unit="step",
            dynamic_ncols=True,
            disable=self.rank != 0,
        )
        with stop_on_signals(self.stop) as stop:
            try:
                train_s = self._loop(bar, stop)
            finally:
                if self.checkpointer is not None:
                    self.checkpointer.finish()
        bar.close()
        self.bar = None
        if self.metrics is not None:
            self.metrics.close()
        tc = self.tc
        if stop and self.step < tc.max_steps:  # a checkpoint of this very state (a stop during a save or
            # right after resuming) is not written again: a second signal mid-rewrite could cost it
            path = self.saved_at[1] if self.saved_at is not None and self.saved_at[0] == self.step else self.save()
            if self.checkpointer is not None:
                self.checkpointer.finish()  # published before the process exits
            print(f"stopped by signal {stop.signum} at step {self.step}; checkpoint {path}; continue with --resume")
            raise KeyboardInterrupt
        last_val = self.last_val or self.validate(None)  # resumed at max_steps: nothing ran, still report
        steps_run = self.step - start_step
        tokens_per_s = steps_run * self.tokens_per_step / train_s if train_s else 0.0
        self.measure_peak(seconds=min(1.0, max(PEAK_FIRST_S, PEAK_SHARE * train_s)))
        m = self.cfg.model
        return {
            "val_loss": last_val["loss"],
            "val_bpb": last_val.get("bpb"),
            **{f"val_{k}": v for k, v in last_val.items() if k not in ("loss", "bpb", "tokens", "bytes")},
            "family": m.family,
            "objective": self.objective.name,
            "train_tokens": self.tokens_seen,
            "tokens_per_param": self.tokens_seen / self.model.num_params(),
            "steps": self.step,
            "resumed_from_step": start_step,  # train_s, tokens/s, MFU and device hours cover the steps after it
            "skipped_steps": self.skipped_steps,
            "world_size": self.world_size,
            "parallel": self.cfg.parallel.mode,
            "params": self.model.num_params(),
            "trainable_params": sum(p.numel() for p in self.model.parameters() if p.requires_grad),
            "params_non_embedding": self.model.num_params(non_embedding=True),
            "active_matmul_params": matmul_params(self.model),
            "tokens_per_s": tokens_per_s,
            "mfu": self.flops_per_token * tokens_per_s / self.peak_flops,
            "peak_flops": self.peak_flops,
            "peak_flops_square": self.peaks["square"],
            "peak_flops_model_shapes": self.peaks["shapes"],
            "train_s": train_s,
            "train_flops": self.flops_per_token * self.tokens_seen,
            "device_hours": (self.clock() - self.started) * self.world_size / 3600,
            "epochs": self.loader.epoch,
            "device": str(self.device),
            "precision": tc.precision,
            "precision_reason": self.plan.get("precision_reason"),
            "model": f"{m.num_layers} x {m.dim}, {m.num_heads} heads, MLP {m.hidden_dim}"
            + (f", depth {m.depth} on the dial" if m.depth else ""),
            "plan": self.plan.get("max_steps_reason"),
            "wall_s": self.clock() - self.started,
        }
