"""What a run leaves for a person: the metrics the plots read, as the trainer wrote them."""

import json

from kiln.report import plot_training, read_metrics
from kiln.rundir import RunDir


def _write(path, records, tail=""):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def step(n, **extra):
    return {"step": n, "tokens": 100 * n, "loss": 5.0 - 0.1 * n, "lr": 1e-3, **extra}


def test_a_rollback_drops_the_steps_it_undid_and_a_cut_line_is_passed_over(tmp_path):
    records = [step(n) for n in range(1, 7)] + [{"step": 6, "tokens": 600, "val_loss": 4.0}]
    records += [{"step": 4, "rollback_to": 4, "lr_scale": 0.5}] + [step(n) for n in range(5, 9)]
    _write(tmp_path / "metrics.jsonl", records + [[1, 2], "text"], tail='{"step": 9, "tok')
    train, val, tasks = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in train] == list(range(1, 9))  # 5 and 6 once: as trained again
    assert val == [] and tasks == []


def test_the_training_plot_shows_every_task_when_the_set_changes_on_a_resume(tmp_path):
    run = RunDir(tmp_path)
    scores = {"acc": 0.3, "acc_norm": 0.3, "centered": 0.1, "bpb": 1.0}
    records = [step(n) for n in range(1, 21)]
    records.insert(10, {"step": 10, "tokens": 1000, "tasks": {"a": scores}, "tasks_core": 0.1})
    records.append({"step": 20, "tokens": 2000, "tasks": {"b": scores}, "tasks_core": 0.1})
    _write(run.metrics, records)
    assert plot_training(run).read_bytes()[:4] == b"\x89PNG"
    assert plot_training(run, mfu_per_token_s=1e-5).read_bytes()[:4] == b"\x89PNG"  # the closing ceiling's
