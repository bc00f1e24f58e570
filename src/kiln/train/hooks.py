"""What happens around the steps, as hooks on the one training loop (OLMo-core's callbacks in spirit).

After every optimizer step the trainer calls each hook's `after_step` in order; a hook reads and
changes the trainer only through its public attributes (step, tc, last_val, validate, save, log,
set_max_steps). The defaults, in order: follow the time budget's plan (which may fix or shorten
max_steps), validate, score downstream tasks (when eval.every is set), checkpoint.

A hook whose work recurs reports what it costs (`cost`: seconds per run, measured by running it
once, and its interval in steps), so the time-budget planner counts it like validation.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kiln.evaluate.tasks import Task
    from kiln.models.spec import FamilySpec
    from kiln.tokenizer import SpecialIds
    from kiln.train.plan import Planner
    from kiln.train.trainer import Trainer


class Hook:
    def after_step(self, trainer: Trainer, step_s: float) -> None:
        """Called after each completed (not skipped) optimizer step; `step_s` is its wall time."""

    def state(self) -> dict[str, Any]:
        """What this hook adds to a checkpoint's state.json."""
        return {}

    def cost(self, trainer: Trainer) -> tuple[float, int] | None:
        """(seconds one run of this hook's recurring work takes, measured now; its interval in steps,
        0 for the last step only), for the planner; None when the planner already counts it."""
        return None


class FollowPlan(Hook):
    """A time budget: fix max_steps once the first steps are measured, then shorten it if the machine
    slows (train/plan.py)."""

    def __init__(self, planner: Planner, started: float, max_steps_cap: int) -> None:
        self.planner, self.started, self.max_steps_cap = planner, started, max_steps_cap

    def after_step(self, trainer: Trainer, step_s: float) -> None:
        if self.planner.budget_s <= 0 or trainer.stop:
            return
        if trainer.step == trainer.tc.max_steps and "expected_tokens_per_param" in self.planner.plan:
            self.planner.plan["achieved_tokens_per_param"] = trainer.tokens_seen / trainer.model.num_params()
            self.planner.write()  # the size plan's outcome, beside its expectation
            return
        if self.planner.pending:
            self.planner.step_times.append(step_s)
            if not self.planner.due(trainer):
                return
            steps, why = self.planner.plan_steps(trainer, self.started)
        else:
            replanned = self.planner.check_fit(trainer, self.started, step_s, self.max_steps_cap)
            if replanned is None:
                return
            steps = replanned
            why = self.planner.plan["replanned"][-1]
        trainer.set_max_steps(steps, f"plan: {why}")

    def state(self) -> dict[str, Any]:
        return {"planned_steps": self.planner.steps_planned, "max_steps_cap": self.max_steps_cap}


class Validate(Hook):
    """Validation every `train.eval_every` steps on `train.eval_windows` windows, and on every window
    at the last step; the figures go to metrics.jsonl and `trainer.last_val`."""

    def after_step(self, trainer: Trainer, step_s: float) -> None:
        tc = trainer.tc
        final = trainer.step == tc.max_steps
        if not (final or (tc.eval_every and trainer.step % tc.eval_every == 0)):
            return
        trainer.last_val = trainer.validate(None if final else tc.eval_windows)
        shown = {f"val_{k}": v for k, v in trainer.last_val.items() if k not in ("tokens", "bytes")}
        trainer.log(
            {"step": trainer.step, "tokens": trainer.tokens_seen, **shown},
            f"step {trainer.step}: " + " ".join(f"{k} {v:.4f}" for k, v in shown.items()),
        )


class EvalTasks(Hook):
    """Downstream tasks (eval.tasks: evaluate/tasks.py) every `eval.every` steps and at the last step:
    accuracy, centered accuracy and gold bpb per task, and their CORE-style mean, to metrics.jsonl as
    {"step", "tokens", "tasks": {...}, "tasks_core"}."""

    def __init__(self, tasks: list[Task], spec: FamilySpec, encode: Any, ids: SpecialIds) -> None:
        self.tasks, self.spec, self.ids = tasks, spec, ids
        self.encode = functools.cache(encode)  # the same texts every evaluation: tokenized once

    @staticmethod
    def every(trainer: Trainer) -> int:
        return trainer.cfg.eval.every

    def scores(self, trainer: Trainer) -> dict[str, Any]:
        from kiln.evaluate.tasks import core_mean, score_task

        results = [
            score_task(
                task,
                self.spec,
                trainer.forward_model,
                self.encode,
                self.ids,
                trainer.tc.precision,
                trainer.tc.seq_len,
                progress=False,
            )
            for task in self.tasks
        ]
        return {
            "tasks": {r["task"]: {k: r[k] for k in ("acc", "acc_norm", "centered", "bpb")} for r in results},
            "tasks_core": core_mean(results),
        }

    def after_step(self, trainer: Trainer, step_s: float) -> None:
        every = self.every(trainer)
        if not (trainer.step == trainer.tc.max_steps or (every and trainer.step % every == 0)):
            return
        figures = self.scores(trainer)
        shown = " ".join(f"{name} {r['centered']:+.3f}" for name, r in figures["tasks"].items())
        trainer.log(
            {"step": trainer.step, "tokens": trainer.tokens_seen, **figures},
            f"step {trainer.step}: tasks (centered) {shown}, mean {figures['tasks_core']:+.3f}",
        )

    def cost(self, trainer: Trainer) -> tuple[float, int]:
        t0 = trainer.clock()
        self.scores(trainer)
        return trainer.clock() - t0, self.every(trainer)


class Checkpoint(Hook):
    """A checkpoint every `train.checkpoint_every` steps and at the last step."""

    def after_step(self, trainer: Trainer, step_s: float) -> None:
        tc = trainer.tc
        if trainer.step == tc.max_steps or (tc.checkpoint_every and trainer.step % tc.checkpoint_every == 0):
            trainer.save()
