"""Scaling laws and `kiln plan`: the published allocations at Gopher's budget, the fit recovers
known exponents and predicts a held-out run, the plan's shape, warnings and emitted config."""

import json
import math

import numpy as np
import pytest

from kiln.cli import main
from kiln.config import load_config
from kiln.models.build import build_on_meta
from kiln.models.config import ModelConfig
from kiln.runconfig import RunConfig
from kiln.scaling.fit import fit_law, fit_with_checks
from kiln.scaling.laws import BESIROGLU, GOPHER_FLOPS, HOFFMANN, LossLaw, epochs_note
from kiln.scaling.plan import budget_of, decoder_params, make_plan, nearest_depth, planned_model


def test_published_allocations_at_gophers_budget():
    n, d = BESIROGLU.optimal(GOPHER_FLOPS)
    assert 68e9 < n < 76e9 and 1.2e12 < d < 1.45e12 and 16 < d / n < 20  # ~72B x 1.3T, ~18/param
    n, d = HOFFMANN.optimal(GOPHER_FLOPS)
    assert 30e9 < n < 34e9 and 2.8e12 < d < 3.2e12  # ~32B x 3.0T as published
    assert math.isclose(6 * n * d, GOPHER_FLOPS, rel_tol=1e-9)
    # the allocation is the minimum: other splits of the same compute do worse
    nb, db = BESIROGLU.optimal(GOPHER_FLOPS)
    best = BESIROGLU.loss(nb, db)
    assert all(best < BESIROGLU.loss(nb * f, db / f) for f in (0.7, 1.4))


def test_fit_recovers_known_exponents_and_predicts_the_held_out_run():
    truth = LossLaw("truth", E=1.9, A=300.0, B=900.0, alpha=0.32, beta=0.36)
    rng = np.random.default_rng(0)
    points = [
        (n, d, truth.loss(n, d) * (1 + 0.002 * rng.standard_normal()))
        for n in (1e6, 1e7, 3e7, 1e8)
        for d in (2e7, 1e8, 5e8)
    ]
    law = fit_law(points)
    assert abs(law.alpha - 0.32) < 0.05 and abs(law.beta - 0.36) < 0.05 and abs(law.E - 1.9) < 0.15
    report = fit_with_checks(points, bootstrap=8)
    assert report.held_out is not None and abs(report.held_out["relative_error"]) < 0.02
    lo, hi = report.intervals["alpha"]
    assert lo <= law.alpha <= hi
    with pytest.raises(Exception, match="more than one size"):
        fit_law([(1e6, d, 3.0 + i) for i, d in enumerate((1e7, 2e7, 3e7, 4e7, 5e7))])


def test_parameter_count_from_config_matches_the_built_model():
    for cfg in (
        ModelConfig(depth=3, vocab_size=8192, max_seq_len=256),
        ModelConfig(depth=2, vocab_size=1000, max_seq_len=128, tie_embeddings=False, num_kv_heads=1),
        planned_model(4, 8192, 256),  # kiln's recipe: QK-norm gains, untied
        ModelConfig(depth=3, vocab_size=4096, qk_norm=True, norm_params=False),
    ):
        assert decoder_params(cfg) == build_on_meta(cfg).num_params()
    depth, params, _ = nearest_depth(8.9e6, 8192, 256)
    assert params == build_on_meta(planned_model(depth, 8192, 256)).num_params()
    for other in (depth - 1, depth + 1):  # the nearest in ratio
        far = decoder_params(planned_model(other, 8192, 256))
        assert abs(math.log(far / 8.9e6)) >= abs(math.log(params / 8.9e6))


def test_epoch_warnings_follow_muennighoff():
    assert epochs_note(3e6, 1_000_000)[1] == ""
    assert "past ~4" in epochs_note(8e6, 1_000_000)[1]
    assert "past ~16" in epochs_note(3e7, 1_000_000)[1]


def test_plan_reads_the_corpus_and_warns_past_four_epochs(tokenized_run):
    _, run = tokenized_run
    corpus = json.loads((run.split("train") / "manifest.json").read_text())["num_tokens"]
    plan = make_plan(budget_of(flops=6e13, device="h100"), vocab_size=320, seq_len=256, run_dir=run.root)
    assert plan["corpus"]["tokens"] == corpus
    assert plan["corpus"]["epochs"] == pytest.approx(plan["shape"]["tokens"] / corpus)
    assert plan["corpus"]["warning"]  # the tiny corpus is far too small for this budget


def test_plan_budgets_shape_and_emitted_config(tmp_path, capsys):
    b = budget_of(device_hours=10, device="h100", gpus=8, mfu=0.5)
    assert math.isclose(b.flops, 10 * 3600 * 989e12 * 0.5) and math.isclose(b.seconds, 10 * 3600 / 8)
    plan = make_plan(b, vocab_size=8192, seq_len=1024)
    s = plan["shape"]
    assert math.isclose(s["tokens"] * s["flops_per_token"], b.flops, rel_tol=1e-9)
    assert 0.5 < s["params"] / plan["allocations"][0]["params"] < 2  # the nearest dial point
    assert s["memory_per_device_gib"] > 0 and s["energy_kwh"] == pytest.approx(700 * 8 * 1.25 / 1000)
    with pytest.raises(Exception, match="exactly one budget"):
        budget_of(flops=1e20, hours=1)
    out = tmp_path / "planned.json"
    assert main(["plan", "--flops", "1e15", "--seq-len", "256", "--emit-config", str(out)]) == 0
    text = capsys.readouterr().out
    assert "besiroglu2024" in text and "disagree" in text and "nearest shape" in text
    cfg = load_config(RunConfig, out)
    assert cfg.model.depth >= 1 and cfg.train.seq_len == 256 and cfg.train.max_steps >= 1
    assert main(["train", "--config", str(out), "--run-dir", str(tmp_path / "r"), "--dry-run"]) == 0
    assert f"model.depth = {cfg.model.depth}" in capsys.readouterr().out
    planned = make_plan(budget_of(flops=1e15), vocab_size=8192, seq_len=256)["shape"]
    assert decoder_params(cfg.model) == planned["params"] and cfg.model.num_heads == planned["heads"]  # what it printed
    assert cfg.parallel.mode == "none" and cfg.train.global_batch_size == 0
    gpus = tmp_path / "gpus.json"
    assert main(["plan", "--gpu-hours", "80", "--gpus", "8", "--seq-len", "256", "--emit-config", str(gpus)]) == 0
    spread = load_config(RunConfig, gpus)
    assert spread.parallel.mode == "fsdp" and spread.train.global_batch_size == 8 * spread.train.micro_batch_size
    assert main(["plan", "--flops", "1e16", "--seq-len", "256", "--emit-config", str(out)]) == 0  # its own: replaced
    run_config = tmp_path / "config.json"
    run_config.write_text('{"preset": "cpu"}')  # a run's config, or any file kiln plan did not write: kept
    assert main(["plan", "--flops", "1e15", "--emit-config", str(run_config)]) == 2
    assert "not a config kiln plan wrote" in capsys.readouterr().err and run_config.read_text() == '{"preset": "cpu"}'
    trained = tmp_path / "r2"  # a run trained from a planned config saves preset "plan" too
    (trained / "checkpoints").mkdir(parents=True)
    (trained / "config.json").write_text(out.read_text())
    assert main(["plan", "--flops", "1e15", "--emit-config", str(trained / "config.json")]) == 2
    assert (trained / "config.json").read_text() == out.read_text()
    capsys.readouterr()
    assert main(["plan", "--flops", "1e18", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["allocations"][0]["law"] == "besiroglu2024"


@pytest.mark.parametrize(
    "args",
    [
        ["--flops", "inf"],
        ["--flops", "1e20", "--gpus", "0"],
        ["--hours", "1", "--gpus", "-1"],
        ["--flops", "1e20", "--mfu", "nan"],
        ["--flops", "1e20", "--price-per-hour", "nan"],
    ],
)
def test_a_budget_that_is_no_finite_number_is_one_line(args, capsys):
    from kiln.cli import main

    assert main(["plan", *args]) == 2
    err = capsys.readouterr().err
    assert ("expected a finite number" in err or "at least 1" in err) and "Traceback" not in err
