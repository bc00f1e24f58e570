"""Downstream tasks during training: scores in metrics.jsonl and TensorBoard, counted by the planner."""

import json

from kiln import stages
from kiln.report import read_metrics
from tests.conftest import copy_run, tiny_config


def test_task_scores_are_logged_every_n_steps_and_to_tensorboard(tokenized_run, tmp_path, corpus_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    cfg = tiny_config(
        corpus_dir,
        **{
            "train.max_steps": "12",
            "eval.tasks": "kiln",
            "eval.every": "5",
            "eval.every_limit": "10",
        },
    )
    stages.train(cfg, run)
    _, _, tasks = read_metrics(run.metrics)
    assert [r["step"] for r in tasks] == [5, 10, 12]  # every 5 steps and at the end
    for record in tasks:
        assert set(record["tasks"]) == {"kiln_cloze", "kiln_choice"}
        assert all(0 <= t["acc"] <= 1 and t["bpb"] > 0 for t in record["tasks"].values())
    events = EventAccumulator(str(run.tensorboard))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "loss" in tags and "tasks/kiln_choice/centered" in tags and "tasks_core" in tags
    assert [e.step for e in events.Scalars("tasks_core")] == [5, 10, 12]


def test_the_planner_counts_task_evaluation_in_the_budget(tokenized_run, tmp_path, corpus_dir):
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    cfg = tiny_config(
        corpus_dir,
        **{
            "train.time_budget_s": "6",
            "train.max_steps": "100000",
            "train.eval_every": "0",
            "train.checkpoint_every": "0",
            "train.precision": "fp32",
            "eval.tasks": "kiln",
            "eval.every": "20",
            "eval.every_limit": "10",
        },
    )
    stages.train(cfg, run)
    measured = json.loads(run.plan.read_text())["measured"]
    ((seconds, every),) = measured["recurring"]
    assert seconds > 0 and every == 20
    assert measured["per_step_s"] > measured["step_s"]  # the tasks' share per step is in the plan
