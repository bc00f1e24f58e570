"""The training loop: one loop for every objective and stage.

The `Trainer` owns steps, gradient accumulation, clipping, the schedule, periodic validation,
checkpoints and metrics. The model comes in built; the objective turns batches into a loss; the
loader is told its rank and world size.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm import tqdm

from kiln.config import replace, to_dict
from kiln.device import autocast, keep_freed_host_memory, pick_device
from kiln.errors import KilnError
from kiln.evaluate.loss import validation_loss
from kiln.models.build import build_model
from kiln.models.registry import build_objective
from kiln.rundir import RunDir
from kiln.shards.loader import PackedLoader, ShardSet, iterate_windows
from kiln.tokenizer import load_tokenizer, objective_ids
from kiln.train.checkpoint import (
    PendingCheckpoint,
    latest_checkpoint,
    load_training_state,
    read_state,
    save_checkpoint,
)
from kiln.train.config import TrainConfig
from kiln.train.flops import flops_per_token, matmul_params
from kiln.train.optim import build_optimizer, lr_at
from kiln.train.parallel import Parallel, parallelize
from kiln.train.plan import Planner
from kiln.train.precision import measure_matmul_peak
from kiln.train.signals import StopRequest, stop_on_signals

if TYPE_CHECKING:
    from kiln.runconfig import RunConfig


class MetricsLog:
    """metrics.jsonl: one JSON object per line, flushed as written."""

    def __init__(self, path: Path, truncate_after_step: int | None) -> None:
        self.path = path
        if truncate_after_step is not None and path.exists():
            keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= truncate_after_step]
            path.write_text("".join(ln + "\n" for ln in keep))
        elif truncate_after_step is None:
            path.write_text("")

    def write(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")


class Trainer:
    """Trains `cfg.model` on the run directory's shards; resumable from its checkpoints.

    Before building the model, a `Planner` (train/plan.py) settles what the config leaves to the
    machine (the precision; with a budget, the depth) from the checkpoint it resumes, the run
    directory's plan.json or a measurement; with a budget it fixes the step count after the first
    warmup steps.
    """

    def __init__(self, cfg: "RunConfig", run: RunDir, token_bytes: torch.Tensor, tokenizer_sha256: str,
                 resume: bool | str = False, time_budget_s: float | None = None,
                 stop: StopRequest | None = None) -> None:
        self.started = time.perf_counter()
        self.run = run
        self.stop = stop if stop is not None else StopRequest()
        self.device = pick_device(cfg.train.device)
        self.par = Parallel(cfg.parallel, self.device)
        self.rank, self.world_size = self.par.rank, self.par.world_size
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.par.local_rank)
            torch.cuda.set_device(self.device)
        if self.device.type == "cpu":
            keep_freed_host_memory()
        if cfg.train.threads > 0:
            torch.set_num_threads(cfg.train.threads)
        self.accum = self._accumulation(cfg.train)
        self.tokenizer_sha256 = tokenizer_sha256
        self.token_bytes = token_bytes
        self.peak_flops = 0.0  # the MFU ceiling: best of every measurement (see measure_peak)
        self.checkpoint_root = run.checkpoints
        self.max_steps_cap = cfg.train.max_steps
        self.planner = Planner(run, self.device, self.par, cfg.train.time_budget_s if time_budget_s is None
                               else time_budget_s)
        checkpoint = self._find_checkpoint(resume)
        self.cfg = self.planner.settle(cfg, checkpoint, cfg.train.micro_batch_size * self.accum * self.world_size,
                                       self.measure_peak)
        self.tc = self.cfg.train
        self.train_shards = ShardSet(run.split("train"))
        self.val_shards = ShardSet(run.split("val"))
        for shards in (self.train_shards, self.val_shards):
            if shards.tokenizer_sha256 != tokenizer_sha256:
                raise KilnError(f"shards in {shards.directory} were made with another tokenizer; re-run `kiln tokenize`")
            if shards.manifest["vocab_size"] > self.cfg.model.vocab_size:
                raise KilnError(f"tokenizer has {shards.manifest['vocab_size']} tokens but model.vocab_size="
                                f"{self.cfg.model.vocab_size}; raise model.vocab_size")
        torch.manual_seed(self.tc.seed)
        self.model = build_model(self.cfg.model, self.device)
        self.forward_model = parallelize(self.model, self.par, self.tc.precision)  # FSDP shards in place
        self.optimizer = build_optimizer(self.model, self.tc.lr, self.tc.weight_decay,
                                         (self.tc.beta1, self.tc.beta2), self.device)
        self.objective = build_objective(self.cfg.model, self.cfg.objective, objective_ids(load_tokenizer(run.tokenizer)))
        self.loader = PackedLoader(self.train_shards, self.tc.seq_len, self.tc.micro_batch_size,
                                   rank=self.rank, world_size=self.world_size, seed=self.tc.seed)
        self.step = 0
        self.tokens_seen = 0
        self.lr_scale = 1.0  # lowered by rollbacks after repeated non-finite steps
        self.bad_steps = self.skipped_steps = 0
        self.loss_mean: float | None = None
        self.pending: PendingCheckpoint | None = None
        if checkpoint:
            self._load(checkpoint)
            if self.rank == 0:
                print(f"resumed from {checkpoint} at step {self.step}")
        self.metrics = MetricsLog(run.metrics, self.step if checkpoint else None) if self.rank == 0 else None
        if self.tc.compile:
            self.forward_model = torch.compile(self.forward_model)
        self.flops_per_token = flops_per_token(self.cfg.model, self.tc.seq_len, self.cfg.objective)

    def _accumulation(self, tc: TrainConfig) -> int:
        if not tc.global_batch_size:
            return tc.grad_accum_steps
        per_step = tc.micro_batch_size * self.world_size
        if tc.global_batch_size % per_step:
            raise KilnError(f"train.global_batch_size={tc.global_batch_size} is not a multiple of "
                            f"micro_batch_size x ranks = {per_step}")
        return tc.global_batch_size // per_step

    def _find_checkpoint(self, mode: bool | str) -> Path | None:
        """The newest checkpoint whose files match its manifest. mode "auto": None (start fresh) if none."""
        if not mode:
            return None
        path = latest_checkpoint(self.checkpoint_root, verify=True)
        if path is None and mode != "auto":
            raise KilnError(f"--resume given but {self.checkpoint_root} holds no complete checkpoint; "
                            "use --resume auto to start fresh when there is none")
        return path

    @property
    def num_val_windows(self) -> int:
        return PackedLoader(self.val_shards, self.tc.seq_len, self.tc.micro_batch_size, shuffle=False).num_windows

    def _follow_plan(self, bar: tqdm, step_s: float) -> None:
        """After each step of a budgeted run: fix max_steps (the schedule's horizon) once the first
        steps are measured; later, shorten it if the machine has slowed (train/plan.py)."""
        if self.planner.pending:
            self.planner.step_times.append(step_s)
            if not self.planner.due(self):
                return
            steps, why = self.planner.plan_steps(self, self.started)
        else:
            replanned = self.planner.check_fit(self, self.started, step_s)
            if replanned is None:
                return
            steps, why = replanned, self.planner.plan["replanned"][-1]
        self.cfg = replace(self.cfg, train=replace(self.tc, max_steps=steps))
        self.tc = self.cfg.train
        bar.total = steps
        bar.refresh()
        bar.write(f"plan: {why}")

    def measure_peak(self, precision: str | None = None) -> float:
        """The matmul ceiling for MFU (about a second, in the precision trained in), kept as the best
        of every measurement: a reading taken while other work (a thread pool of an earlier stage
        winding down) shares the cores comes out low and would inflate MFU. Stops early on SIGTERM."""
        dtype = torch.bfloat16 if (precision or self.tc.precision) == "bf16" else torch.float32
        peak = self.planner.agreed(measure_matmul_peak(self.device, dtype, stop=lambda: bool(self.stop)))
        self.peak_flops = max(self.peak_flops, peak)
        return self.peak_flops

    @property
    def tokens_per_step(self) -> int:
        return self.tc.seq_len * self.tc.micro_batch_size * self.accum * self.world_size

    def _load(self, path: Path) -> None:
        state = read_state(path)
        if state.get("tokenizer_sha256") != self.tokenizer_sha256:
            raise KilnError(f"checkpoint {path} was trained with another tokenizer; resume with its run directory")
        load_training_state(path, self.model, self.optimizer, self.rank)
        self.loader.load_state_dict(state["loader"])
        self.step, self.tokens_seen = state["step"], state["tokens_seen"]
        self.lr_scale = state.get("lr_scale", 1.0)

    def finish_checkpoint(self) -> Path | None:
        """Publish a checkpoint still being written in the background (if any)."""
        pending, self.pending = self.pending, None
        return pending.finish() if pending is not None else None

    def save(self) -> Path:
        self.finish_checkpoint()
        state = {"loader": self.loader.state_dict(), "tokens_seen": self.tokens_seen, "lr_scale": self.lr_scale,
                 "tokenizer_sha256": self.tokenizer_sha256, "world_size": self.world_size,
                 "global_batch_size": self.tc.micro_batch_size * self.accum * self.world_size,
                 "planned_steps": self.planner.steps_planned, "max_steps_cap": self.max_steps_cap}
        out = save_checkpoint(self.checkpoint_root, self.step, self.model, self.optimizer, state, to_dict(self.cfg),
                              self.run.tokenizer, self.tc.keep_checkpoints, self.par, self.tc.async_checkpoint)
        if isinstance(out, PendingCheckpoint):
            self.pending = out
            return self.checkpoint_root / f"step_{self.step}"
        return out

    def rollback(self) -> int:
        """Back to the last good checkpoint with a lower learning rate (after repeated bad steps)."""
        self.finish_checkpoint()
        path = latest_checkpoint(self.checkpoint_root, verify=True)
        if path is None:
            raise KilnError(f"{self.bad_steps} steps in a row had a non-finite loss or gradient and there is no "
                            "checkpoint to roll back to; lower train.lr or check the data")
        scale = self.lr_scale * self.tc.rollback_lr_factor
        self._load(path)
        self.lr_scale = scale
        self.bad_steps = 0
        return self.step

    def validate(self, max_windows: int | None) -> dict[str, float]:
        """The objective's validation figures ("loss"; "bpb" for causal LMs); all windows when None."""
        batches = iterate_windows(self.val_shards, self.tc.seq_len, self.tc.micro_batch_size, max_windows)
        return validation_loss(self.objective, self.forward_model, batches, self.token_bytes, self.device,
                               self.tc.precision, final=max_windows is None)

    def _generator(self, micro: int) -> torch.Generator:
        """Seeds the objective's random choices from (seed, step, micro-batch, rank): resumable."""
        key = ((self.tc.seed * 1_000_003 + self.step) * 1009 + micro) * 9973 + self.rank
        return torch.Generator().manual_seed(key % (2**63))

    def train_step(self) -> dict[str, float]:
        """One optimizer step over grad_accum_steps micro-batches."""
        tc = self.tc
        lr = tc.lr * self.lr_scale * lr_at(self.step, tc.max_steps, tc.warmup_steps, tc.schedule, tc.decay_fraction,
                                           tc.min_lr_ratio)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        total_loss = torch.zeros((), device=self.device)
        figures: dict[str, float] = {}
        for micro in range(self.accum):
            inputs, targets = self.loader.next_batch()
            batch = self.objective.make_batch(inputs, targets, self._generator(micro))
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with autocast(self.device, tc.precision):
                loss, metrics = self.objective.loss(self.forward_model, batch)
            (loss / self.accum).backward()
            total_loss += loss.detach()
            for k, v in metrics.items():
                figures[k] = figures.get(k, 0.0) + float(v) / self.accum
        max_norm = tc.grad_clip if tc.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        grad_norm = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm  # FSDP: a DTensor
        loss_value = self.par.all_mean(total_loss).item() / self.accum
        if not (math.isfinite(loss_value) and math.isfinite(grad_norm.item())):
            self.optimizer.zero_grad(set_to_none=True)  # skip: no update; the batch is consumed
            self.bad_steps += 1
            self.skipped_steps += 1
            return {"skipped": 1.0, "loss": None, "lr": lr, "grad_norm": None}
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.bad_steps = 0
        self.step += 1
        self.tokens_seen += self.tokens_per_step
        return {"loss": loss_value, "lr": lr, "grad_norm": grad_norm.item(), **figures}

    def _log(self, record: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.write(record)

    def _loop(self, bar: tqdm, stop: StopRequest) -> tuple[dict[str, float], float]:
        """Steps until max_steps or a stop request; returns (last validation, seconds in train steps)."""
        train_s = 0.0
        last_val: dict[str, float] = {}
        while self.step < self.tc.max_steps and not stop:
            tc = self.tc  # the plan may fix max_steps after the first steps
            t0 = time.perf_counter()
            stats = self.train_step()
            dt = time.perf_counter() - t0
            train_s += dt
            if stats.get("skipped"):
                self._log({"step": self.step, "skipped_step": True, "skipped_total": self.skipped_steps})
                bar.write(f"step {self.step + 1}: non-finite loss or gradient, step skipped ({self.bad_steps} in a row)")
                if self.bad_steps >= tc.max_bad_steps:
                    back = self.rollback()
                    self._log({"step": back, "rollback_to": back, "lr_scale": self.lr_scale})
                    bar.write(f"rolled back to step {back}; learning rate now x{self.lr_scale:g}")
                    bar.n = back
                continue
            if self.loss_mean is not None and stats["loss"] > tc.spike_factor * self.loss_mean:
                self._log({"step": self.step, "loss_spike": stats["loss"], "loss_mean": self.loss_mean})
            self.loss_mean = stats["loss"] if self.loss_mean is None else 0.9 * self.loss_mean + 0.1 * stats["loss"]
            if not self.peak_flops:
                self.measure_peak()
            tok_s = self.tokens_per_step / dt
            mfu = self.flops_per_token * tok_s / self.peak_flops if self.peak_flops else 0.0
            self._log({"step": self.step, "tokens": self.tokens_seen, **stats, "tokens_per_s": tok_s, "mfu": mfu})
            bar.set_postfix(loss=f"{stats['loss']:.3f}", lr=f"{stats['lr']:.2e}", tok_s=f"{tok_s:,.0f}", mfu=f"{mfu:.1%}")
            bar.update(1)
            if self.planner.budget_s > 0 and not stop:
                self._follow_plan(bar, dt)
                tc = self.tc
            final = self.step == tc.max_steps
            if final or (tc.eval_every and self.step % tc.eval_every == 0):
                last_val = self.validate(None if final else tc.eval_windows)
                shown = {f"val_{k}": v for k, v in last_val.items() if k not in ("tokens", "bytes")}
                self._log({"step": self.step, "tokens": self.tokens_seen, **shown})
                bar.write(f"step {self.step}: " + " ".join(f"{k} {v:.4f}" for k, v in shown.items()))
            if final or (tc.checkpoint_every and self.step % tc.checkpoint_every == 0):
                self.save()
        return last_val, train_s

    def fit(self) -> dict[str, Any]:
        """Run to train.max_steps; return the figures for summary.json. SIGINT/SIGTERM stop at the
        next step boundary with a checkpoint (then KeyboardInterrupt)."""
        tc = self.tc
        self.model.train()
        start_step = self.step
        bar = tqdm(total=tc.max_steps, initial=self.step, desc="train", unit="step", dynamic_ncols=True,
                   disable=self.rank != 0)
        with stop_on_signals(self.stop) as stop:
            try:
                last_val, train_s = self._loop(bar, stop)
            finally:
                self.finish_checkpoint()
        bar.close()
        tc = self.tc
        if stop and self.step < tc.max_steps:
            path = self.save()
            self.finish_checkpoint()  # published before the process exits
            print(f"stopped by signal {stop.signum} at step {self.step}; checkpoint {path}; continue with --resume")
            raise KeyboardInterrupt
        if not last_val:  # resumed at max_steps: nothing ran, still report validation
            last_val = self.validate(None)
        steps_run = self.step - start_step
        tokens_per_s = steps_run * self.tokens_per_step / train_s if train_s else 0.0
        self.measure_peak()
        m = self.cfg.model
        return {
            "val_loss": last_val["loss"],
            "val_bpb": last_val.get("bpb"),
            **{f"val_{k}": v for k, v in last_val.items() if k not in ("loss", "bpb", "tokens", "bytes")},
            "family": self.cfg.model.family,
            "objective": self.objective.name,
            "train_tokens": self.tokens_seen,
            "steps": self.step,
            "skipped_steps": self.skipped_steps,
            "world_size": self.world_size,
            "parallel": self.cfg.parallel.mode,
            "params": self.model.num_params(),
            "params_non_embedding": self.model.num_params(non_embedding=True),
            "active_matmul_params": matmul_params(self.model),
            "tokens_per_s": tokens_per_s,
            "mfu": self.flops_per_token * tokens_per_s / self.peak_flops,
            "peak_flops": self.peak_flops,
            "train_s": train_s,
            "epochs": self.loader.epoch,
            "device": str(self.device),
            "precision": tc.precision,
            "precision_reason": self.planner.plan.get("precision_reason"),
            "model": f"{m.num_layers} x {m.dim}, {m.num_heads} heads, MLP {m.hidden_dim}"
                     + (f", depth {m.depth} on the dial" if m.depth else ""),
            "plan": self.planner.plan.get("max_steps_reason") if self.planner.steps_planned else None,
            "wall_s": time.perf_counter() - self.started,
        }
