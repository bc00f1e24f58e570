"""Runs planned to a wall-clock budget: the model size and the number of steps that fit it.

With `train.time_budget_s` (or `kiln run`'s budget) the trainer plans in two places:

1. Before building the model (`train.size_from_budget`): the depth on the size dial. A first guess
   assumes the step reaches SIZE_MFU of the measured matmul ceiling (`choose_depth`); then the
   trainer's own step is timed on random tokens at that depth and its neighbours (train/probe.py;
   eager, and with train.compile once compiled too, at the first depth that could fit at
   MAX_COMPILE_SPEEDUP: the eager times are divided by that measured speedup, so the model is sized
   for the steps the run will take), and the
   plan takes the largest depth whose measured tokens/s, over the budget's training share
   (1 - SIZE_OVERHEAD), still give `train.tokens_per_param` tokens per parameter (`search_depth`). A
   deeper depth whose step, scaled from a timed one by FLOPs, misses that by far is not timed
   (`misses_by_far`).
   The plan records each depth's measured rate and the chosen one's expected tokens per parameter,
   and the run adds what it achieved.
2. After the first few steps (inside the warmup, where the learning rate does not depend on the
   horizon, so planning late changes nothing already done): the number of steps, from the measured
   step time, one measured validation batch and the checkpoint cost (`plan_max_steps`). It becomes
   `train.max_steps` and the schedule's horizon.

A shared machine can slow down after the plan was made, or have been busy while the first steps were
measured. During the stable phase of the WSD schedule (whose learning rate does not depend on the
horizon) the trainer checks every REPLAN_EVERY steps whether the recent step time still ends the
stage inside the budget, and shortens or extends the horizon to fit (`replanned_steps`); the decay
then starts accordingly and the run still ends with it. Only in the stable phase: the run up to that
point is the one the new plan would have trained, and plan.json is updated so a repeated run trains
it from the start.

Both choices, with the precision, are written to the run directory's plan.json with the config and
machine they were made for. A repeated run with the same config on the same machine reuses them, so
it is bitwise identical; a resumed run takes them from its checkpoint's config.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kiln.config import whole
from kiln.staging import write_whole

SIZE_MFU = 0.5
"""Fraction of the measured matmul ceiling assumed for the depth search's first guess only; the depth
is chosen from measured step times (train/probe.py)."""
SIZE_OVERHEAD = 0.3
"""Share of the training budget that is not training steps when sizing: validation, task scoring,
checkpoints, the timing of candidate depths (with train.compile one compilation among them) and the
run's own compilation: 31 % in the default run on a 2-core Zen 4 (2026-12-06, docs/benchmarks.md)."""
MAX_PROBES = 4
"""Depths timed at most when searching (each costs a model build and a few steps); the chosen depth
is timed too when the search settles below the last depth it tried."""
MAX_COMPILE_SPEEDUP = 3.0
"""The most a compiled step is assumed to gain over an eager one on a CPU (measured: 1.8x on an AMX
Xeon, 2.3x on a Zen 4, 2026-12-06/07). With train.compile, the planner measures the speedup once, by
compiling a step (about as long as 20-40 steps on a 2-core CPU); on a CPU it skips that at a depth
whose eager step misses the target even at this speedup, and measures it at the first depth that
could fit, usually the one chosen, whose kernels the run then finds in inductor's cache. On a GPU
(launch-bound small models can gain more) the first depth timed is compiled, as before."""
ESTIMATE_MARGIN = 1.5
"""A depth deeper than one already timed is not timed itself when its step, estimated from the timed
one's by their FLOPs per token, affords less than the target tokens per parameter by a wide margin:
this factor, or 1 / the timed depth's MFU where that is larger (`misses_by_far`). Deeper models run
at the same or a larger share of the ceiling (fp32 on a 2-core AVX2 EPYC: 66 % at depth 3, 68 % at
depth 4), so the estimate errs slow, by ~3 % there. Timing that depth cost 14-34 s of a 9-minute
default run."""
CHECKPOINT_BYTES_PER_S = 100e6
"""Checkpoint write rate assumed for planning: well under the 360-760 MB/s measured (docs/benchmarks.md)."""
CHECKPOINT_BYTES_PER_PARAM = 24
"""fp32 weights and two AdamW moments in DCP, the consolidated weights, read back once for checksums."""
MARGIN = 0.05
"""Share of the budget left unplanned: step-time noise on a shared machine."""
END_S = 3.0
"""Fixed cost after the last step: the closing ceiling measurements (at most 2 s) and the summary."""


@dataclass(frozen=True)
class SizeOption:
    """One depth on the dial, with what sizing needs to know about it."""

    depth: int
    params: int
    flops_per_token: float


def misses_by_far(estimated: float, target: float, timed_mfu: float) -> bool:
    """Whether a deeper depth whose FLOP-scaled step estimate affords `estimated` tokens per parameter
    can be left untimed against `target`. No depth runs above the ceiling, so its real rate is at most
    the estimate / the timed depth's MFU: where that MFU is low (a small model on a GPU, bound by
    launches rather than FLOPs) the estimate says little and the depth is timed; otherwise it must
    miss by ESTIMATE_MARGIN too."""
    if timed_mfu <= 0:
        return False
    return estimated * max(ESTIMATE_MARGIN, 1 / timed_mfu) < target


def choose_depth(
    options: list[SizeOption], budget_s: float, flops_per_s: float, tokens_per_param: float
) -> tuple[int, str]:
    """The largest depth whose affordable tokens (`budget_s * flops_per_s / flops_per_token`) reach
    `tokens_per_param` per parameter; the smallest option if none does. Returns (depth, why)."""
    if not options:
        raise ValueError("choose_depth needs at least one option")
    fits = [o for o in options if budget_s * flops_per_s / o.flops_per_token >= tokens_per_param * o.params]
    pick = max(fits, key=lambda o: o.depth) if fits else min(options, key=lambda o: o.depth)
    tokens = budget_s * flops_per_s / pick.flops_per_token
    return pick.depth, (
        f"depth {pick.depth}: {pick.params / 1e6:.2f}M parameters, ~{tokens / 1e6:.2f}M tokens "
        f"affordable in {budget_s:.0f} s at {flops_per_s / 1e9:.0f} GFLOP/s "
        f"({tokens / pick.params:.2f} per parameter; the target is {tokens_per_param:g})"
    )


def search_depth(depths: list[int], guess: int, fits: Callable[[int], bool], max_probes: int = MAX_PROBES) -> int:
    """The largest depth (of the sorted `depths`) for which `fits` holds, searched from `guess`: up while
    the next one fits, else down until one does (the smallest if none does), calling `fits` at most
    `max_probes` times (`fits` is a measurement)."""
    i, probes = depths.index(guess), 1
    if fits(depths[i]):
        while i + 1 < len(depths) and probes < max_probes:
            probes += 1
            if not fits(depths[i + 1]):
                break
            i += 1
        return depths[i]
    while i > 0 and probes < max_probes:
        i, probes = i - 1, probes + 1
        if fits(depths[i]):
            return depths[i]
    return depths[max(i - 1, 0)] if i > 0 else depths[0]


@dataclass(frozen=True)
class StepCosts:
    """Measured (or, for checkpoints, estimated) seconds of the parts of a training stage."""

    step_s: float
    """One optimizer step."""
    eval_batch_s: float
    """One validation batch (forward only)."""
    checkpoint_s: float
    """One checkpoint."""
    recurring: tuple[tuple[float, int], ...] = ()
    """Other recurring work (the hooks' `cost`): (seconds per run, every how many steps; 0: the end only)."""


def stage_costs(
    costs: StepCosts, eval_every: int, eval_batches: int, final_eval_batches: float, checkpoint_every: int
) -> tuple[float, float]:
    """(seconds a step costs with its share of periodic validation and checkpoints, seconds fixed at
    the end: the final validation and checkpoint and END_S)."""
    per_step_s = costs.step_s
    if eval_every:
        per_step_s += eval_batches * costs.eval_batch_s / eval_every
    if checkpoint_every:
        per_step_s += costs.checkpoint_s / checkpoint_every
    per_step_s += sum(seconds / every for seconds, every in costs.recurring if every)
    fixed_s = final_eval_batches * costs.eval_batch_s + costs.checkpoint_s + END_S
    return per_step_s, fixed_s + sum(seconds for seconds, _ in costs.recurring)


def plan_max_steps(
    remaining_s: float,
    steps_done: int,
    costs: StepCosts,
    eval_every: int,
    eval_batches: int,
    final_eval_batches: float,
    checkpoint_every: int,
    cap: int,
) -> tuple[int, str]:
    """The step count at which the stage ends inside `remaining_s` seconds from now, validation and
    checkpoints included, leaving MARGIN of it; at most `cap`, at least `steps_done`."""
    per_step_s, fixed_s = stage_costs(costs, eval_every, eval_batches, final_eval_batches, checkpoint_every)
    more = max(0, math.floor((remaining_s * (1 - MARGIN) - fixed_s) / per_step_s))
    steps = min(cap, steps_done + more)
    return steps, (
        f"{steps} steps: {costs.step_s:.3f} s a step, {per_step_s:.3f} s with validation and checkpoints, "
        f"{fixed_s:.1f} s for the final validation and checkpoint, {remaining_s:.0f} s left"
        + (" (capped by train.max_steps)" if steps == cap and steps_done + more > cap else "")
    )


REPLAN_EVERY = 10
"""Steps between checks that the plan still fits."""
REPLAN_WINDOW = 40
"""Recent steps whose median time the checks use (a shared VM's step times vary by ~10 %)."""
REPLAN_SLACK = 0.03
"""Change the plan only when the projected end misses its target (the budget, or the budget less
MARGIN when extending) by more than this share of the budget; except at the last check before the
decay, which extends by any step that fits."""


def replanned_steps(
    max_steps: int,
    step: int,
    decay_fraction: float,
    projected_s: float,
    budget_s: float,
    per_step_s: float,
    cap: int,
) -> int | None:
    """A new horizon when the stage is projected to end `projected_s` seconds after its start: shorter
    when that is past `budget_s` (the machine slowed), longer (up to `cap`) when it falls well short
    (the first steps, which the plan measured, were slow). None when the plan still fits, or once the
    WSD decay has begun (the horizon can no longer change without a jump in the learning rate). The
    last check before the decay extends by any whole step that fits, without REPLAN_SLACK: nothing
    can use the time later (the default runs ended at 94-100 % of the training budget, 2026-12-07).
    `per_step_s`: the recent cost of a step."""
    decay_start = max_steps - max(1, round(decay_fraction * max_steps))
    if step >= decay_start:
        return None
    if projected_s > budget_s * (1 + REPLAN_SLACK):
        steps = max_steps - math.ceil((projected_s - budget_s) / per_step_s)
        earliest = math.ceil((step + 1) / (1 - decay_fraction)) if decay_fraction < 1 else step + 1
        steps = max(steps, earliest, step + 1)  # the decay may start now, not in the past
        return steps if steps < max_steps else None
    last_chance = step + REPLAN_EVERY >= decay_start  # the next check falls in the decay
    if projected_s < budget_s * (1 - MARGIN - (0 if last_chance else REPLAN_SLACK)):
        steps = min(cap, max_steps + math.floor((budget_s * (1 - MARGIN) - projected_s) / per_step_s))
        return steps if steps > max_steps else None
    return None


def machine_fingerprint(device: torch.device, world_size: int) -> dict[str, Any]:
    """What a plan's measurements depend on: processor, its instruction-set flags, torch, threads."""
    info: dict[str, Any] = {
        "torch": torch.__version__,
        "device": device.type,
        "world_size": world_size,
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    cpuinfo = Path("/proc/cpuinfo")
    text = cpuinfo.read_text() if cpuinfo.exists() else ""
    fields = dict(line.split(":", 1) for line in text.splitlines()[:40] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    info["cpu"] = fields.get("model name") or platform.processor() or platform.machine()
    flags = fields.get("flags", "")
    info["cpu_flags_sha256"] = hashlib.sha256(flags.encode()).hexdigest()[:16]
    return info


def config_key(requested: dict[str, Any]) -> str:
    """A stable digest of the requested config (a plan is reused only for the same one)."""
    return hashlib.sha256(json.dumps(requested, sort_keys=True).encode()).hexdigest()[:16]


def read_plan(path: Path, key: str, machine: dict[str, Any]) -> dict[str, Any] | None:
    """The plan saved at `path` if it was made for this config and machine, else None."""
    try:
        plan = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(plan, dict) or plan.get("config_key") != key or plan.get("machine") != machine:
        return None
    counts = [plan.get(name, 1) for name in ("depth", "max_steps")]
    if plan.get("precision", "fp32") not in ("bf16", "fp32") or not all(whole(n, least=1) for n in counts):
        return None  # not a plan kiln wrote (made again)
    return plan


def write_plan(path: Path, plan: dict[str, Any]) -> None:
    write_whole(path, json.dumps(plan, indent=2) + "\n")
