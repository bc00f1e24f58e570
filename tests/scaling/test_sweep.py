"""`kiln sweep`: points are normal run directories on the run's shards, run through submitit's local
executor, never rerun once finished, resumed when cut; the collected table, plot and fit, and
`kiln plan` reading the fit."""

import json

import pytest

from kiln.cli import main
from kiln.config import save_config
from kiln.rundir import RunDir
from kiln.scaling.plan import budget_of, make_plan
from kiln.scaling.sweep import Point, frontier, point_config
from tests.conftest import copy_run, tiny_config

ARGS = ["--depths", "1,2,3", "--tokens", "1024,3072", "--lrs", "0.003"]


def test_point_config_sets_the_shape_and_the_steps(corpus_dir):
    cfg = point_config(tiny_config(corpus_dir), Point(depth=3, tokens=3072, lr=0.003))
    assert cfg.model.num_layers == 3 and cfg.model.dim == 192
    assert cfg.train.max_steps == 6 and cfg.train.lr == 0.003 and cfg.train.time_budget_s == 0


def test_frontier_keeps_only_points_no_cheaper_one_beats():
    rows = [{"flops": 1, "val_loss": 5.0}, {"flops": 2, "val_loss": 5.5}, {"flops": 3, "val_loss": 4.0}]
    assert [r["flops"] for r in frontier(rows)] == [1, 3]


@pytest.mark.slow  # ~40 s: every stage of it, in CI's slow pass
def test_sweep_runs_resumes_and_fits(tokenized_run, corpus_dir, tmp_path, capsys):
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    save_config(tiny_config(corpus_dir), run.config)
    args = ["sweep", "--run-dir", str(run.root), *ARGS, "--adamw.weight_decay", "0.05"]
    args += ["--executor", "local", "--jobs", "2"]
    assert main(args) == 0
    (logs,) = (run.root / "sweep" / "submitit").iterdir()  # submitit's pickles: a new folder, the user's alone
    assert logs.stat().st_mode & 0o777 == 0o700 and any(logs.rglob("*.pkl"))
    result = json.loads((run.root / "scaling" / "sweep.json").read_text())
    assert len(result["points"]) == 6 and result["missing"] == 0
    assert {r["depth"] for r in result["points"]} == {1, 2, 3}
    assert (run.root / "scaling" / "loss_vs_compute.png").stat().st_size > 0
    fit = json.loads((run.root / "scaling" / "fit.json").read_text())
    assert set(fit["law"]) == {"E", "A", "B", "alpha", "beta"} and fit["held_out"]["loss"] > 0
    point = RunDir(run.root / "sweep" / "d2_t3072_lr0.003")
    assert json.loads(point.config.read_text())["adamw"]["weight_decay"] == 0.05  # overrides reach every point
    assert (point.checkpoints / "step_6" / "model.safetensors").exists() and point.shards.is_symlink()
    # finished points are never rerun; a point cut after its checkpoint resumes from it
    stamps = {p: p.stat().st_mtime_ns for p in (run.root / "sweep").glob("*/stages.json")}
    (point.root / "stages.json").unlink()
    capsys.readouterr()
    assert main([*args[:-4], "--executor", "inline"]) == 0
    out = capsys.readouterr().out
    assert out.count("sweep point") == 1 and "resumed from" in out
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items() if p.parent != point.root)
    # kiln plan now offers kiln's own law for this corpus
    plan = make_plan(budget_of(flops=1e12, device="h100"), vocab_size=320, seq_len=64, run_dir=run.root)
    assert plan["allocations"][-1]["law"] == "kiln (this corpus)"


def test_a_point_folder_that_is_a_link_or_holds_anothers_files_is_refused(tmp_path, corpus_dir):
    from kiln.errors import KilnError
    from kiln.scaling.sweep import prepare_point

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    base, point = tiny_config(corpus_dir), Point(depth=1, tokens=1024, lr=0.003)
    mine = tmp_path / "mine"  # a run directory from someone else, its point a link to a user's folder
    mine.mkdir()
    (mine / "metrics.jsonl").write_text("my own log\n")
    (run.root / "sweep").mkdir()
    (run.root / "sweep" / point.name).symlink_to(mine)
    with pytest.raises(KilnError, match="is a link"):
        prepare_point(run, base, point)
    (run.root / "sweep" / point.name).unlink()
    (run.root / "sweep" / point.name).mkdir()
    (run.root / "sweep" / point.name / "shards").symlink_to(tmp_path / "nowhere")  # in the way, dangling
    with pytest.raises(KilnError, match="in the way"):
        prepare_point(run, base, point)
    assert [p.name for p in mine.iterdir()] == ["metrics.jsonl"]
