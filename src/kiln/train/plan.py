"""What a run's config leaves to the machine, settled once and kept: precision, depth, step count.

`Planner.settle` runs before the model is built. A resumed run takes every choice from its
checkpoint's config (train/resume.py checks what else changed). A fresh one reuses the run
directory's plan.json when it was made for the same config on the same machine (so a repeated run is
bitwise identical), and otherwise measures: the bf16/fp32 matmul rates for `train.precision auto`,
the matmul ceiling for a budget-sized depth. With a time budget, `plan_steps` then fixes the step
count after the first warmup steps from the measured step time (the rules are in train/budget.py).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch

from kiln.config import from_dict, replace, require, to_dict
from kiln.device import compile_unavailable
from kiln.models.build import build_on_meta
from kiln.rundir import RunDir
from kiln.train.budget import (
    CHECKPOINT_BYTES_PER_PARAM,
    CHECKPOINT_BYTES_PER_S,
    END_S,
    MAX_COMPILE_SPEEDUP,
    REPLAN_EVERY,
    REPLAN_WINDOW,
    SIZE_MFU,
    SIZE_OVERHEAD,
    SizeOption,
    StepCosts,
    choose_depth,
    config_key,
    machine_fingerprint,
    misses_by_far,
    plan_max_steps,
    read_plan,
    replanned_steps,
    search_depth,
    stage_costs,
    write_plan,
)
from kiln.train.checkpoint import read_config, read_state
from kiln.train.flops import flops_per_token
from kiln.train.parallel import Parallel
from kiln.train.precision import MatmulRates, choose_precision, measure_matmul_peak, probe_matmul_rates
from kiln.train.probe import step_seconds
from kiln.train.resume import check_resume

if TYPE_CHECKING:
    from kiln.runconfig import RunConfig
    from kiln.tokenizer import SpecialIds
    from kiln.train.trainer import Trainer

MEASURE_AFTER_STEPS = 6
"""The step count is planned after this many steps (or the warmup, if shorter), the first left out."""


BF16_RESUME_SLOWDOWN = 0.5
"""A bf16 run resumed with `train.precision auto` goes on in fp32 where bf16 matmuls measure below this
fraction of the fp32 rate (an AVX2-only CPU: ~0.01); nearer 1, a busy moment could flip a resume on the
machine that trained it, which then keeps its bf16 (and its bitwise continuation)."""


class Planner:
    """Settles and records (plan.json) the choices a config leaves to the machine."""

    def __init__(
        self,
        run: RunDir,
        device: torch.device,
        par: Parallel,
        budget_s: float,
        stop: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.perf_counter,
        ids: SpecialIds | None = None,
    ) -> None:
        self.run, self.device, self.par, self.budget_s, self.stop = run, device, par, budget_s, stop
        self.clock, self.ids = clock, ids
        """`ids`: the tokenizer's special ids, for timing candidate depths on random text tokens."""
        self.peak_flops = 0.0
        """The matmul ceiling, when the depth choice measured it (the trainer reuses it for MFU)."""
        self.plan: dict[str, Any] = {}
        self.steps_planned = False
        """max_steps is fixed by a plan (this run's, plan.json's or the checkpoint's)."""
        self.adapts = False
        """This run made the step plan itself, so it may revise it (`check_fit`); a plan taken from
        plan.json or a checkpoint is followed as it is, so the run repeats bitwise."""
        self.step_times: list[float] = []

    def say(self, line: str) -> None:
        if self.par.rank == 0:
            print(line, flush=True)

    def agreed(self, value: float) -> float:
        """The mean over ranks of a measured figure, so that every rank makes the same decision."""
        return self.par.mean_of(value, self.device)

    @property
    def pending(self) -> bool:
        """The step count is still to be planned."""
        return self.budget_s > 0 and not self.steps_planned

    def settle(self, cfg: RunConfig, checkpoint: Path | None, global_batch: int) -> RunConfig:
        """The config to train with: every choice concrete, from `checkpoint` or plan.json or measured."""
        cfg = self._from_checkpoint(cfg, checkpoint, global_batch) if checkpoint else self._fresh(cfg)
        if self.pending:
            require(
                cfg.train.warmup_steps >= 2,
                "a time budget needs train.warmup_steps >= 2: the plan measures the "
                "step time during the warmup, where the learning rate does not depend on the step count",
            )
        return cfg

    def _from_checkpoint(self, cfg: RunConfig, checkpoint: Path, global_batch: int) -> RunConfig:
        state = read_state(checkpoint)
        trained = from_dict(type(cfg), read_config(checkpoint))
        # the plan's step count stands unless this run asks for another train.max_steps than it was capped by
        self.steps_planned = state.get("planned_steps", False) and cfg.train.max_steps == state.get("max_steps_cap")
        settled, warnings = check_resume(
            cfg, trained, self.steps_planned, global_batch, state.get("global_batch_size", 0), str(checkpoint)
        )
        for line in warnings:
            self.say(line)
        if settled.train.precision == "auto":  # a checkpoint from before precision was settled
            settled = replace(settled, train=replace(settled.train, precision=self._choose_precision("auto")))
        self.plan["precision_reason"] = f"{settled.train.precision}, as the checkpoint was trained"
        if cfg.train.precision == "auto" and settled.train.precision == "bf16" and self.device.type == "cpu":
            here = choose_precision("auto", self.device, self._rates())  # moved to another CPU since?
            speedup = here.bf16_speedup or 1.0
            if speedup < BF16_RESUME_SLOWDOWN:
                self.plan["bf16_speedup"] = speedup
                self.say(
                    "warning: train.precision: checkpoint 'bf16', now 'fp32': "
                    f"bf16 runs {1 / speedup:.0f}x slower than fp32 on this CPU "
                    "(changes the numerics from here on; --train.precision bf16 keeps the checkpoint's)"
                )
                self.plan["precision_reason"] = f"fp32, not the checkpoint's bf16: {here.reason}"
                settled = replace(settled, train=replace(settled.train, precision="fp32"))
        return settled

    def _fresh(self, cfg: RunConfig) -> RunConfig:
        key, machine = config_key(to_dict(cfg)), machine_fingerprint(self.device, self.par.world_size)
        saved = read_plan(self.run.plan, key, machine)
        self.plan = saved or {"config_key": key, "machine": machine}
        if saved:
            self.say(f"plan: reusing {self.run.plan} (made for this config on this machine)")
        if "precision" not in self.plan:
            self.plan["precision"] = self._choose_precision(cfg.train.precision)
        train = replace(cfg.train, precision=self.plan["precision"])
        self.say(f"precision: {self.plan['precision']} ({self.plan['precision_reason']})")
        if self.budget_s > 0 and cfg.train.size_from_budget:
            if "depth" not in self.plan:
                self.plan["depth"], self.plan["depth_reason"] = self._choose_depth(cfg, train.precision)
            self.say(f"size: {self.plan['depth_reason']}")
            cfg = replace(cfg, model=replace(cfg.model, depth=self.plan["depth"]))
        if self.budget_s > 0 and "max_steps" in self.plan:
            train = replace(train, max_steps=self.plan["max_steps"])
            self.steps_planned = True
            self.say(f"plan: {self.plan['max_steps_reason']}")
        self.write()
        return replace(cfg, train=train)

    def _rates(self) -> MatmulRates:
        """This CPU's bf16 and fp32 matmul rates, the same on every rank."""
        probed = probe_matmul_rates(str(self.device))
        return MatmulRates(self.agreed(probed.fp32), self.agreed(probed.bf16), probed.size)

    def _choose_precision(self, requested: str) -> str:
        rates = self._rates() if self.device.type == "cpu" and requested != "fp32" else None
        choice = choose_precision(requested, self.device, rates)
        if choice.warning:
            self.say(f"warning: {choice.warning}")
        self.plan["precision_reason"] = choice.reason
        if choice.bf16_speedup is not None:
            self.plan["bf16_speedup"] = choice.bf16_speedup
        return choice.precision

    def _choose_depth(self, cfg: RunConfig, precision: str) -> tuple[int, str]:
        """The depth whose measured step rate affords train.tokens_per_param tokens per parameter in
        the budget (train/budget.py's rules); each timed depth's rate goes into the plan."""
        require(cfg.model.depth > 0, "train.size_from_budget needs the size dial: set model.depth")
        require(self.ids is not None, "sizing a model by its step time needs the tokenizer's special ids")
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.peak_flops = self.agreed(measure_matmul_peak(self.device, dtype, stop=self.stop))
        tc = replace(cfg.train, precision=precision)
        shapes = {
            d: replace(cfg, model=replace(cfg.model, depth=d), train=tc) for d in range(2, 4 * cfg.model.depth + 1)
        }
        options = {
            d: SizeOption(d, build_on_meta(c.model).num_params(), flops_per_token(c.model, tc.seq_len, c.objective))
            for d, c in shapes.items()
        }
        guess, _ = choose_depth(list(options.values()), self.budget_s, self.peak_flops * SIZE_MFU, tc.tokens_per_param)
        train_s = self.budget_s * (1 - SIZE_OVERHEAD)
        tokens_per_step = tc.seq_len * tc.micro_batch_size * tc.grad_accum_steps
        ids = cast("SpecialIds", self.ids)
        compiled = tc.compile and self.agreed(0.0 if compile_unavailable(self.device) is None else 1.0) == 0
        probe: dict[int, dict[str, float]] = {}
        speedup: dict[int, float] = {}  # compiled over eager, measured once, at the first depth that could fit

        def estimated_miss(depth: int) -> bool:
            """Whether `depth`, deeper than one timed, misses the target by far (`misses_by_far`) at that
            one's step time scaled by FLOPs per token; if so it is recorded as estimated, not timed."""
            below = [d for d in probe if d < depth and "estimated_from" not in probe[d]]
            if not below:
                return False
            base = max(below)
            step_s = probe[base]["step_s"] * options[depth].flops_per_token / options[base].flops_per_token
            estimated = train_s * tokens_per_step / step_s / options[depth].params
            if not misses_by_far(estimated, tc.tokens_per_param, probe[base]["mfu"]):
                return False
            rate = tokens_per_step / step_s
            probe[depth] = {"step_s": step_s, "tokens_per_s": rate, "mfu": probe[base]["mfu"], "estimated_from": base}
            return True

        def fits(depth: int, step_s: float) -> bool:
            return train_s * tokens_per_step / step_s >= tc.tokens_per_param * options[depth].params

        def measure_speedup(depth: int, eager_s: float) -> None:
            compiled_s = self.agreed(step_seconds(shapes[depth], self.device, ids, clock=self.clock, compiled=True))
            torch._dynamo.reset()  # the run compiles its own model; inductor's cache on disk keeps the kernels
            speedup[depth] = eager_s / compiled_s

        def record(depth: int, eager_s: float) -> float:
            step_s = eager_s / next(iter(speedup.values()), 1.0)
            rate = tokens_per_step / step_s
            mfu = options[depth].flops_per_token * rate / self.peak_flops if self.peak_flops else 0.0
            probe[depth] = {"eager_step_s": eager_s, "step_s": step_s, "tokens_per_s": rate, "mfu": mfu}
            return step_s

        def timed_fits(depth: int) -> bool:
            if self.stop():
                raise KeyboardInterrupt
            eager_s = self.agreed(step_seconds(shapes[depth], self.device, ids, clock=self.clock))
            # on a CPU, a depth that misses even at the largest speedup seen is not compiled (a GPU's
            # launch-bound small models can gain more than any bound measured here)
            hopeless = self.device.type == "cpu" and not fits(depth, eager_s / MAX_COMPILE_SPEEDUP)
            if compiled and not speedup and not hopeless:
                measure_speedup(depth, eager_s)
            return fits(depth, record(depth, eager_s))

        depth = search_depth(sorted(options), guess, lambda d: not estimated_miss(d) and timed_fits(d))
        if depth not in probe or "estimated_from" in probe[depth]:  # the plan's figure for it is a timed one
            timed_fits(depth)
        if compiled and not speedup:  # no depth could fit: the run still trains compiled steps
            measure_speedup(depth, probe[depth]["eager_step_s"])
        for d, p in list(probe.items()):  # those timed before the speedup was known: at the compiled rate too
            if "eager_step_s" in p:
                record(d, p["eager_step_s"])
        if max(p["mfu"] for p in probe.values()) > 1.0:  # the steps ran above the ceiling: it was read low
            self._remeasure_peak(dtype, probe)
        self.plan["depth_probe"] = {str(d): v for d, v in sorted(probe.items())}
        for at, factor in speedup.items():
            self.plan["compile_speedup"], self.plan["compile_speedup_depth"] = factor, at
        chosen = options[depth]
        rate = probe[depth]["tokens_per_s"]
        expected = train_s * rate / chosen.params
        self.plan["expected_tokens_per_param"] = expected
        timed = ", ".join(
            f"depth {d} {p['tokens_per_s']:,.0f} tokens/s ({p['mfu']:.0%} MFU)"
            + (f", estimated from depth {p['estimated_from']} by FLOPs" if "estimated_from" in p else "")
            for d, p in sorted(probe.items())
        )
        for at, factor in speedup.items():
            timed += f"; eager steps times the compiled step's speedup, {factor:.2f}x at depth {at}"
        return depth, (
            f"depth {depth}: {chosen.params / 1e6:.2f}M parameters, ~{train_s * rate / 1e6:.2f}M tokens in "
            f"{train_s:.0f} s of steps at a measured {rate:,.0f} tokens/s: {expected:.2f} per parameter (the target "
            f"is {tc.tokens_per_param:g}; timed: {timed}; ceiling {self.peak_flops / 1e9:.0f} GFLOP/s)"
        )

    def _remeasure_peak(self, dtype: torch.dtype, probe: dict[int, dict[str, float]]) -> None:
        """Measure the matmul ceiling again after the timed steps ran above it (a reading taken in a
        moment the cores were shared, on a VM, comes out low); keep the larger, and restate the probes'
        MFU against it. The run's progress line uses this ceiling; the first guess, made from the low
        reading, is not redone (the search from it settled the depth)."""
        low = self.peak_flops
        again = self.agreed(measure_matmul_peak(self.device, dtype, stop=self.stop))
        self.peak_flops = max(low, again)
        for p in probe.values():
            p["mfu"] *= low / self.peak_flops
        self.plan["ceiling_remeasured"] = {"first": low, "again": again}
        self.say(
            f"ceiling: the timed steps ran above the {low / 1e9:.0f} GFLOP/s measured first; "
            f"measured again: {again / 1e9:.0f} GFLOP/s"
        )

    def due(self, trainer: Trainer) -> bool:
        """Enough steps measured to plan the step count (within the warmup)."""
        return (
            self.pending
            and len(self.step_times) >= 2
            and trainer.step >= min(trainer.tc.warmup_steps, MEASURE_AFTER_STEPS)
        )

    def plan_steps(self, trainer: Trainer, started: float) -> tuple[int, str]:
        """max_steps from the measured step time, a measured validation batch and the checkpoint cost,
        for a stage that started at `started` (perf_counter) to end inside the budget."""
        tc = trainer.tc
        step_s = statistics.median(self.step_times[1:])  # the first step pays for allocations
        eval_s = []
        for _ in range(2):  # so does the first forward in eval mode
            t0 = self.clock()
            trainer.validate(tc.micro_batch_size)
            eval_s.append(self.clock() - t0)
        checkpoint_s = trainer.model.num_params() * CHECKPOINT_BYTES_PER_PARAM / CHECKPOINT_BYTES_PER_S
        recurring = tuple(
            (self.agreed(c[0]), c[1]) for c in (hook.cost(trainer) for hook in trainer.hooks) if c is not None
        )
        costs = StepCosts(self.agreed(step_s), self.agreed(min(eval_s)), checkpoint_s, recurring)
        num_windows = trainer.num_val_windows
        eval_batches = math.ceil(min(tc.eval_windows, num_windows) / tc.micro_batch_size)
        final_batches = trainer.objective.final_eval_batches(num_windows, tc.micro_batch_size, tc.seq_len)
        remaining_s = self.agreed(self.budget_s - (self.clock() - started))
        steps, why = plan_max_steps(
            remaining_s,
            trainer.step,
            costs,
            tc.eval_every,
            eval_batches,
            final_batches,
            tc.checkpoint_every,
            tc.max_steps,
        )
        per_step_s, fixed_s = stage_costs(costs, tc.eval_every, eval_batches, final_batches, tc.checkpoint_every)
        self.plan.update(
            max_steps=steps,
            max_steps_reason=why,
            budget_s=self.budget_s,
            measured={
                "step_s": costs.step_s,
                "eval_batch_s": costs.eval_batch_s,
                "checkpoint_s": costs.checkpoint_s,
                "recurring": [list(c) for c in costs.recurring],
                "after_steps": trainer.step,
                "per_step_s": per_step_s,
                "fixed_s": fixed_s,
            },
        )
        self.step_times = []
        self.steps_planned = self.adapts = True
        self.write()
        return steps, why

    def check_fit(self, trainer: Trainer, started: float, step_s: float, cap: int) -> int | None:
        """Every REPLAN_EVERY steps of a WSD schedule's stable phase: a shorter step count if the recent
        step time (`step_s` is the latest) no longer ends the stage inside the budget, else None."""
        tc = trainer.tc
        if not (self.budget_s > 0 and self.adapts and tc.schedule == "wsd"):
            return None
        self.step_times = (self.step_times + [step_s])[-REPLAN_WINDOW:]
        if trainer.step % REPLAN_EVERY or len(self.step_times) < REPLAN_EVERY:
            return None
        measured = self.plan.get("measured", {})
        per_step_s = statistics.median(self.step_times) * (
            measured.get("per_step_s", 1.0) / measured.get("step_s", 1.0)
        )
        end_s = measured.get("fixed_s", END_S)
        projected_s = self.agreed(self.clock() - started + (tc.max_steps - trainer.step) * per_step_s + end_s)
        steps = replanned_steps(
            tc.max_steps, trainer.step, tc.decay_fraction, projected_s, self.budget_s, per_step_s, cap
        )
        if steps is not None:
            self.plan["max_steps"] = steps
            self.plan["replanned"] = self.plan.get("replanned", []) + [
                f"at step {trainer.step}: steps took {per_step_s:.3f} s, the end was projected at {projected_s:.0f} s "
                f"of {self.budget_s:.0f}; {tc.max_steps} -> {steps} steps"
            ]
            self.write()
        return steps

    def write(self) -> None:
        if self.par.rank == 0:
            write_plan(self.run.plan, self.plan)
