"""Runs planned to a time budget: the step count follows measured throughput, the size follows the
tokens the budget affords, and a repeated or resumed run follows the same plan bitwise."""

import json
import os
import signal

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from kiln import stages
from kiln.train import trainer as trainer_module
from kiln.train.budget import (
    END_S,
    SizeOption,
    StepCosts,
    choose_depth,
    misses_by_far,
    plan_max_steps,
    replanned_steps,
    search_depth,
)
from kiln.train.checkpoint import checkpoint_dirs
from tests.conftest import copy_run, tiny_config


def test_planned_steps_follow_the_measured_step_time():
    costs = StepCosts(step_s=1.0, eval_batch_s=0.1, checkpoint_s=0.5)
    steps, why = plan_max_steps(
        400, 5, costs, eval_every=50, eval_batches=2, final_eval_batches=20, checkpoint_every=100, cap=10_000
    )
    # 400 s less 5 % margin, less 20 x 0.1 (final eval) + 0.5 (final checkpoint) + 3 (end) = 374.5 s,
    # at 1 + 0.2 / 50 + 0.5 / 100 = 1.009 s a step
    assert steps == 5 + 371 and "1.000 s a step" in why
    slower, _ = plan_max_steps(400, 5, StepCosts(2.0, 0.1, 0.5), 50, 2, 20, 100, 10_000)
    assert slower == 5 + 186  # 374.5 / 2.009
    capped, why = plan_max_steps(400, 5, costs, 50, 2, 20, 100, cap=100)
    assert capped == 100 and "capped" in why
    none_left, _ = plan_max_steps(1, 5, costs, 50, 2, 20, 100, 10_000)
    assert none_left == 5


def test_a_plan_changes_only_when_it_misses_and_only_before_the_decay():
    assert replanned_steps(100, 20, 0.3, projected_s=120, budget_s=100, per_step_s=1.0, cap=1000) == 80
    assert replanned_steps(100, 20, 0.3, projected_s=101, budget_s=100, per_step_s=1.0, cap=1000) is None  # slack
    assert replanned_steps(100, 75, 0.3, projected_s=200, budget_s=100, per_step_s=1.0, cap=1000) is None  # decaying
    # far over: the decay starts at once, never before the current step
    assert replanned_steps(100, 40, 0.3, projected_s=1000, budget_s=100, per_step_s=1.0, cap=1000) == 59
    # well short (the measured first steps were slow): extended to 95 % of the budget, at most the cap
    assert replanned_steps(100, 20, 0.3, projected_s=80, budget_s=100, per_step_s=1.0, cap=1000) == 115
    assert replanned_steps(100, 20, 0.3, projected_s=80, budget_s=100, per_step_s=1.0, cap=105) == 105
    assert replanned_steps(100, 20, 0.3, projected_s=94, budget_s=100, per_step_s=1.0, cap=1000) is None
    # the last check before the decay (starts at step 70) takes any whole step that fits inside 95 s
    assert replanned_steps(100, 60, 0.3, projected_s=93.5, budget_s=100, per_step_s=1.0, cap=1000) == 101
    assert replanned_steps(100, 60, 0.3, projected_s=94.5, budget_s=100, per_step_s=1.0, cap=1000) is None


def test_the_depth_follows_the_tokens_the_budget_affords():
    options = [SizeOption(d, params=d * 1_000_000, flops_per_token=6 * d * 1_000_000) for d in range(2, 9)]
    slow, _ = choose_depth(options, budget_s=400, flops_per_s=100e9, tokens_per_param=0.5)
    fast, why = choose_depth(options, budget_s=400, flops_per_s=500e9, tokens_per_param=0.5)
    # tokens/param = budget * rate / (6 d^2 1e12): d <= sqrt(400 * rate / 3e12)
    assert (slow, fast) == (3, 8) and "depth 8" in why
    assert choose_depth(options, 1, 1e9, 0.5)[0] == 2  # nothing fits: the smallest


def _budget_config(corpus_dir, **extra):
    return tiny_config(
        corpus_dir,
        **{
            "train.time_budget_s": "6",
            "train.max_steps": "100000",
            "train.eval_every": "0",
            "train.checkpoint_every": "0",
            "train.precision": "fp32",
            **extra,
        },
    )


class StepClock:
    """Seconds that pass only inside training steps, `step_s` each (a later `step_s` from step
    `slower_from` on; or `step_s(trainer)`, a "machine" whose step time follows the model): the plan
    then depends on the steps alone, not on how busy the machine is."""

    def __init__(self, monkeypatch, step_s, slower_from: int = 0, slower_s: float = 0.0) -> None:
        self.now = 0.0
        original = trainer_module.Trainer.train_step

        def step(trainer):
            out = original(trainer)
            if callable(step_s):
                self.now += step_s(trainer)
            else:
                self.now += slower_s if slower_from and trainer.step >= slower_from else step_s
            return out

        monkeypatch.setattr(trainer_module.Trainer, "train_step", step)

    def __call__(self) -> float:
        return self.now


def _weights(run):
    return load_file(str(checkpoint_dirs(run.checkpoints)[-1] / "model.safetensors"))


def test_a_budgeted_run_fits_records_its_plan_and_repeats_bitwise(tokenized_run, tmp_path, corpus_dir, monkeypatch):
    _, src = tokenized_run
    cfg = _budget_config(corpus_dir)
    first = copy_run(src, tmp_path / "first")
    clock = StepClock(monkeypatch, 0.05)
    out = stages.train(cfg, first, clock=clock)
    assert clock.now <= 6  # the stage ends inside its budget
    plan = json.loads(first.plan.read_text())
    assert plan["precision"] == "fp32" and out["steps"] == plan["max_steps"] > plan["measured"]["after_steps"]
    assert plan["measured"]["step_s"] == pytest.approx(0.05) and out["plan"] == plan["max_steps_reason"]
    # 6 s less 5 %, the checkpoint (estimated) and END_S at the end, at 0.05 s a step (validation costs no time here)
    assert out["steps"] == pytest.approx((6 * 0.95 - END_S - plan["measured"]["checkpoint_s"]) / 0.05, abs=2)

    again = copy_run(src, tmp_path / "again")
    again.plan.write_text(first.plan.read_text())  # the same config on the same machine: the same plan
    assert stages.train(cfg, again)["steps"] == out["steps"]
    assert all(torch.equal(v, _weights(again)[k]) for k, v in _weights(first).items())

    # a budgeted run stopped half-way and resumed ends on the same weights
    resumed = copy_run(src, tmp_path / "resumed")
    resumed.plan.write_text(first.plan.read_text())
    half = out["steps"] // 2
    original = trainer_module.Trainer.train_step

    def stop_half_way(self):
        result = original(self)
        if self.step == half:
            self.stop.signum = signal.SIGTERM
        return result

    monkeypatch.setattr(trainer_module.Trainer, "train_step", stop_half_way)
    with pytest.raises(KeyboardInterrupt):
        stages.train(cfg, resumed)
    monkeypatch.setattr(trainer_module.Trainer, "train_step", original)
    assert stages.train(cfg, resumed, resume=True)["steps"] == out["steps"]
    assert all(torch.equal(v, _weights(resumed)[k]) for k, v in _weights(first).items())


def test_the_planned_step_count_follows_the_step_time(tokenized_run, tmp_path, corpus_dir, monkeypatch):
    _, src = tokenized_run
    fast = stages.train(
        _budget_config(corpus_dir), copy_run(src, tmp_path / "fast"), clock=StepClock(monkeypatch, 0.05)
    )
    slow = stages.train(_budget_config(corpus_dir), copy_run(src, tmp_path / "slow"), clock=StepClock(monkeypatch, 0.1))
    assert slow["steps"] == pytest.approx(fast["steps"] / 2, abs=4)


def test_sigterm_during_the_ceiling_measurement_exits_promptly_with_a_checkpoint(
    tokenized_run, tmp_path, corpus_dir, monkeypatch
):
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    real = trainer_module.measure_matmul_peak

    stopped = []

    def signalled_during(device, dtype, seconds=1.0, stop=lambda: False):
        os.kill(os.getpid(), signal.SIGTERM)  # arrives while a (here 10 minute) measurement is under way
        peak = real(device, dtype, seconds=600.0, stop=stop)
        stopped.append(stop())  # it returned because it was told to stop, not at its 10 minutes
        return peak

    monkeypatch.setattr(trainer_module, "measure_matmul_peak", signalled_during)
    with pytest.raises(KeyboardInterrupt):
        stages.train(tiny_config(corpus_dir, **{"train.max_steps": "50", "train.precision": "fp32"}), run)
    assert stopped == [True]
    assert [p.name for p in checkpoint_dirs(run.checkpoints)] == ["step_1"]


def test_a_run_that_slows_down_after_planning_shortens_its_plan(tokenized_run, tmp_path, corpus_dir, monkeypatch):
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    clock = StepClock(monkeypatch, 0.05, slower_from=10, slower_s=0.09)  # the machine slows after the plan
    out = stages.train(_budget_config(corpus_dir), run, clock=clock)
    plan = json.loads(run.plan.read_text())
    assert plan["replanned"] and out["steps"] == plan["max_steps"]
    assert clock.now <= 6 * 1.03  # the budget, within the replanning slack


def test_the_depth_search_measures_few_depths_and_takes_the_largest_that_fits():
    calls = []

    def fits_up_to(limit):
        def fits(depth):
            calls.append(depth)
            return depth <= limit

        return fits

    depths = list(range(2, 13))
    assert search_depth(depths, 5, fits_up_to(7)) == 7 and calls == [5, 6, 7, 8]
    calls.clear()
    assert search_depth(depths, 5, fits_up_to(3)) == 3 and calls == [5, 4, 3]
    calls.clear()
    assert search_depth(depths, 5, fits_up_to(0)) == 2 and calls == [5, 4, 3, 2]  # none fits: the smallest
    calls.clear()
    assert search_depth(depths, 8, fits_up_to(1), max_probes=2) == 6 and calls == [8, 7]  # one below the last tried


@pytest.mark.parametrize("first_reading", [1.0, 0.25])
def test_a_budget_sizes_the_model_by_the_measured_step_time(
    tokenized_run, tmp_path, corpus_dir, monkeypatch, first_reading
):
    """A machine whose step time grows with the model: the planner times candidate depths (the same
    step, on random tokens) and takes the largest that still sees tokens_per_param tokens a parameter.
    A ceiling first read at a quarter of the machine's (shared cores) is measured again once the
    timed steps run above it, and the plan's MFU figures are stated against the second reading."""
    from kiln.config import replace
    from kiln.models.build import build_on_meta
    from kiln.models.config import ModelConfig
    from kiln.train import plan as plan_module
    from kiln.train.budget import SIZE_MFU, SIZE_OVERHEAD
    from kiln.train.flops import flops_per_token

    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    seconds_per_param = 0.95e-6  # this "machine" takes 0.95e-6 s per parameter per step
    clock = StepClock(monkeypatch, lambda trainer: seconds_per_param * trainer.model.num_params())
    cfg = _budget_config(corpus_dir, **{"train.size_from_budget": "true", "train.tokens_per_param": "0.2"})
    model = ModelConfig(depth=3, aspect=16, vocab_size=320, max_seq_len=64)
    cfg = replace(cfg, model=model, train=replace(cfg.train, time_budget_s=20.0))
    # the matmul ceiling this "machine" reports: its steps run at SIZE_MFU of it (as the planner's first
    # guess assumes), so the guess lands near and the search, not the guess, settles the depth
    at3 = replace(model, depth=3)
    rate = flops_per_token(at3, cfg.train.seq_len, cfg.objective) / (
        seconds_per_param * build_on_meta(at3).num_params()
    )
    peak = rate * cfg.train.seq_len * cfg.train.micro_batch_size / SIZE_MFU
    readings = iter([peak * first_reading, peak])
    monkeypatch.setattr(plan_module, "measure_matmul_peak", lambda *a, **k: next(readings))
    out = stages.train(cfg, run, clock=clock)
    plan = json.loads(run.plan.read_text())
    tokens_per_step = cfg.train.seq_len * cfg.train.micro_batch_size
    if first_reading < 1:
        assert plan["ceiling_remeasured"] == pytest.approx({"first": peak * first_reading, "again": peak})
    else:
        assert "ceiling_remeasured" not in plan
    assert all(p["mfu"] == pytest.approx(SIZE_MFU, rel=0.02) for p in plan["depth_probe"].values())

    def affords(depth):
        params = build_on_meta(replace(model, depth=depth)).num_params()
        return 20 * (1 - SIZE_OVERHEAD) * tokens_per_step / (seconds_per_param * params) >= 0.2 * params

    want = max(d for d in range(2, 13) if affords(d))
    assert want == 3
    assert plan["depth"] == want and str(want) in plan["depth_probe"] and len(plan["depth_probe"]) <= 5
    assert plan["expected_tokens_per_param"] >= 0.2 and "measured" in plan["depth_reason"]
    assert plan["achieved_tokens_per_param"] == pytest.approx(out["tokens_per_param"])


class Compiled(nn.Module):
    """Stands for torch.compile's module in the planner tests: the same forward, marked."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, *args, **kwargs):
        return self.inner(*args, **kwargs)


def fake_compile(monkeypatch):
    """torch.compile returns a `Compiled` wrapper, and compilation counts as available everywhere."""
    from kiln.train import build as build_module
    from kiln.train import plan as plan_module

    monkeypatch.setattr(torch, "compile", Compiled)
    monkeypatch.setattr(plan_module, "compile_unavailable", lambda device: None)
    monkeypatch.setattr(build_module, "compile_unavailable", lambda device: None)


def test_a_compiled_step_sizes_the_model_for_the_steps_the_run_takes(tokenized_run, tmp_path, corpus_dir, monkeypatch):
    """With train.compile the planner times one compiled step beside the eager ones and sizes the
    model at the compiled rate: on a "machine" whose compiled steps take half the time, a deeper model
    than the eager rate affords, expecting the tokens per parameter the run then achieves."""
    from kiln.config import replace
    from kiln.models.build import build_on_meta
    from kiln.models.config import ModelConfig
    from kiln.train import plan as plan_module
    from kiln.train.budget import SIZE_MFU, SIZE_OVERHEAD
    from kiln.train.flops import flops_per_token

    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    seconds_per_param = 1.1e-6
    compiled_calls = []

    def step_s(trainer):  # eager: 1.1e-6 s per parameter per step; compiled: half that
        compiled = isinstance(trainer.step_model, Compiled)
        compiled_calls.append(compiled)
        return seconds_per_param * trainer.model.num_params() / (2 if compiled else 1)

    clock = StepClock(monkeypatch, step_s)
    fake_compile(monkeypatch)
    model = ModelConfig(depth=3, aspect=16, vocab_size=320, max_seq_len=64)
    cfg = _budget_config(corpus_dir, **{"train.size_from_budget": "true", "train.compile": "true"})
    tokens_per_step = cfg.train.seq_len * cfg.train.micro_batch_size
    params = {d: build_on_meta(replace(model, depth=d)).num_params() for d in range(2, 13)}

    def per_param(depth, speedup):  # tokens per parameter the budget's training share affords
        tokens = 20 * (1 - SIZE_OVERHEAD) * tokens_per_step * speedup / (seconds_per_param * params[depth])
        return tokens / params[depth]

    target = 1.5 * per_param(4, 1.0)  # depth 4 fits only at the compiled rate
    assert per_param(3, 1.0) >= target > per_param(4, 1.0) and per_param(5, 2.0) < target <= per_param(4, 2.0)
    cfg = replace(cfg, model=model, train=replace(cfg.train, time_budget_s=20.0, tokens_per_param=target))
    # the ceiling this "machine" reports puts the first guess at depth 3 (its eager rate at SIZE_MFU)
    at3 = replace(model, depth=3)
    rate = flops_per_token(at3, cfg.train.seq_len, cfg.objective) / (seconds_per_param * params[3])
    peak = rate * tokens_per_step / SIZE_MFU
    monkeypatch.setattr(plan_module, "measure_matmul_peak", lambda *a, **k: peak)
    out = stages.train(cfg, run, clock=clock)
    plan = json.loads(run.plan.read_text())
    assert plan["depth"] == 4 and plan["compile_speedup"] == pytest.approx(2.0)
    assert plan["depth_probe"]["4"]["step_s"] == pytest.approx(seconds_per_param * params[4] / 2)
    assert "speedup" in plan["depth_reason"] and plan["expected_tokens_per_param"] >= target
    assert compiled_calls[-1]  # the run trained compiled steps, at the rate the plan sized it for
    assert plan["measured"]["step_s"] == pytest.approx(plan["depth_probe"]["4"]["step_s"])
    assert plan["achieved_tokens_per_param"] == pytest.approx(out["tokens_per_param"])


def test_no_compilation_is_spent_on_a_depth_that_misses_at_any_speedup(
    tokenized_run, tmp_path, corpus_dir, monkeypatch
):
    """The compiled step's speedup is measured once, by compiling a probe: not at a depth whose eager
    step misses the target even at MAX_COMPILE_SPEEDUP (compiling costs many steps, and the run then
    compiles another depth), but at the first one that could fit; depths timed before it are stated
    at the compiled rate too."""
    from kiln.config import replace
    from kiln.models.build import build_on_meta
    from kiln.models.config import ModelConfig
    from kiln.train import plan as plan_module
    from kiln.train.budget import MAX_COMPILE_SPEEDUP, SIZE_MFU, SIZE_OVERHEAD
    from kiln.train.flops import flops_per_token

    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    seconds_per_param = 1.1e-6
    model = ModelConfig(depth=3, aspect=16, vocab_size=320, max_seq_len=64)
    params = {d: build_on_meta(replace(model, depth=d)).num_params() for d in range(2, 13)}
    depth_of = {p: d for d, p in params.items()}
    steps = []

    def step_s(trainer):  # eager: 1.1e-6 s per parameter per step; compiled: half that
        compiled = isinstance(trainer.step_model, Compiled)
        steps.append((depth_of[trainer.model.num_params()], compiled))
        return seconds_per_param * trainer.model.num_params() / (2 if compiled else 1)

    clock = StepClock(monkeypatch, step_s)
    fake_compile(monkeypatch)
    cfg = _budget_config(corpus_dir, **{"train.size_from_budget": "true", "train.compile": "true"})
    tokens_per_step = cfg.train.seq_len * cfg.train.micro_batch_size

    def per_param(depth, speedup):  # tokens per parameter the budget's training share affords
        tokens = 20 * (1 - SIZE_OVERHEAD) * tokens_per_step * speedup / (seconds_per_param * params[depth])
        return tokens / params[depth]

    target = 0.95 * per_param(4, 2.0)  # depth 4 fits at the compiled rate, 5 not even at the largest speedup
    assert per_param(5, MAX_COMPILE_SPEEDUP) < target
    cfg = replace(cfg, model=model, train=replace(cfg.train, time_budget_s=20.0, tokens_per_param=target))
    # the ceiling this "machine" reports puts the first guess at depth 6 (at SIZE_MFU of it)
    options = [
        SizeOption(d, params[d], flops_per_token(replace(model, depth=d), cfg.train.seq_len, cfg.objective))
        for d in params
    ]
    peak = 1.001 * target * options[4].params * options[4].flops_per_token / (20.0 * SIZE_MFU)
    assert choose_depth(options, 20.0, peak * SIZE_MFU, target)[0] == 6
    monkeypatch.setattr(plan_module, "measure_matmul_peak", lambda *a, **k: peak)
    stages.train(cfg, run, clock=clock)
    plan = json.loads(run.plan.read_text())
    assert plan["depth"] == 4 and plan["compile_speedup"] == pytest.approx(2.0)
    assert {"6", "5", "4"} <= set(plan["depth_probe"])  # 6 and 5 were timed eager only
    assert {d for d, compiled in steps if compiled} == {4} and plan["compile_speedup_depth"] == 4
    for d, probe in plan["depth_probe"].items():
        if "eager_step_s" in probe:
            assert probe["step_s"] == pytest.approx(probe["eager_step_s"] / 2), d
    assert "2.00x at depth 4" in plan["depth_reason"]


def test_a_deeper_depth_that_misses_by_far_is_estimated_not_timed(tokenized_run, tmp_path, corpus_dir, monkeypatch):
    """On a "machine" whose step time follows the FLOPs, the depth above the one that fits misses the
    target tokens per parameter by more than ESTIMATE_MARGIN: the planner records its step as
    estimated from the timed depth's by FLOPs and spends no budget timing it; the depth it takes is
    timed."""
    from kiln.config import replace
    from kiln.models.build import build_on_meta
    from kiln.models.config import ModelConfig
    from kiln.train import plan as plan_module
    from kiln.train.budget import ESTIMATE_MARGIN, SIZE_MFU, SIZE_OVERHEAD
    from kiln.train.flops import flops_per_token

    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    model = ModelConfig(depth=4, aspect=32, vocab_size=320, max_seq_len=64)
    cfg = _budget_config(corpus_dir, **{"train.size_from_budget": "true"})
    tokens_per_step = cfg.train.seq_len * cfg.train.micro_batch_size
    shapes = {d: replace(model, depth=d) for d in range(2, 17)}
    params = {d: build_on_meta(m).num_params() for d, m in shapes.items()}
    flops = {d: flops_per_token(m, cfg.train.seq_len, cfg.objective) for d, m in shapes.items()}
    depth_of = {p: d for d, p in params.items()}
    machine_flops = 2e9
    timed = []

    def step_s(trainer):  # this "machine" runs every depth at the same FLOP/s
        depth = depth_of[trainer.model.num_params()]
        timed.append(depth)
        return flops[depth] * tokens_per_step / machine_flops

    def per_param(depth):  # tokens per parameter the budget's training share affords
        return 20 * (1 - SIZE_OVERHEAD) * machine_flops / flops[depth] / params[depth]

    target = 0.9 * per_param(4)
    assert per_param(5) * ESTIMATE_MARGIN < target  # depth 5 misses by far; depth 4 fits
    clock = StepClock(monkeypatch, step_s)
    # the ceiling this "machine" reports puts the first guess at depth 4
    peak = machine_flops * (1 - SIZE_OVERHEAD) / SIZE_MFU
    monkeypatch.setattr(plan_module, "measure_matmul_peak", lambda *a, **k: peak)
    cfg = replace(cfg, model=model, train=replace(cfg.train, time_budget_s=20.0, tokens_per_param=target))
    stages.train(cfg, run, clock=clock)
    plan = json.loads(run.plan.read_text())
    assert plan["depth"] == 4 and 5 not in timed and 4 in timed
    assert plan["depth_probe"]["5"]["estimated_from"] == 4 and "eager_step_s" not in plan["depth_probe"]["5"]
    assert plan["depth_probe"]["5"]["step_s"] == pytest.approx(flops[5] * tokens_per_step / machine_flops)
    assert "estimated from depth 4 by FLOPs" in plan["depth_reason"]


def test_a_depth_is_left_untimed_only_where_its_estimate_cannot_fit():
    """The FLOP-scaled estimate decides only where it misses by the margin and the timed depth ran
    near the ceiling: at a low MFU (launch-bound) the deeper depth may run far faster than its FLOPs
    say, so it is timed."""
    assert misses_by_far(0.15, 0.3, timed_mfu=0.68)  # the AVX2 EPYC's depth 4
    assert not misses_by_far(0.25, 0.3, timed_mfu=0.68)  # a near miss: timed
    assert not misses_by_far(0.15, 0.3, timed_mfu=0.2)  # could reach 0.75 at the ceiling: timed
    assert misses_by_far(0.05, 0.3, timed_mfu=0.2)  # misses even at the ceiling
    assert not misses_by_far(0.01, 0.3, timed_mfu=0.0)  # no ceiling measured: timed


def test_a_saved_plan_kiln_could_not_have_written_is_made_again(tmp_path):
    from kiln.train.budget import read_plan, write_plan

    path, machine = tmp_path / "plan.json", {"cpu": "test"}
    good = {"config_key": "k", "machine": machine, "precision": "bf16", "depth": 3, "max_steps": 200}
    write_plan(path, good)
    assert read_plan(path, "k", machine) == good
    for crafted in ({"precision": "fp64"}, {"precision": 7}, {"depth": 0}, {"max_steps": "many"}, {"depth": True}):
        write_plan(path, {**good, **crafted})
        assert read_plan(path, "k", machine) is None, crafted
    for raw in (b"[1]", b"\xff\xfe"):
        path.write_bytes(raw)
        assert read_plan(path, "k", machine) is None
