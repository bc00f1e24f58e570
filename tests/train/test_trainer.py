import json

import pytest
import torch
from safetensors.torch import load_file

from kiln import stages
from kiln.train.checkpoint import checkpoint_dirs
from kiln.train.optim import lr_at
from tests.conftest import copy_run, tiny_config


def test_loss_drops_on_a_tiny_corpus(tokenized_run, tmp_path, corpus_dir):
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    cfg = tiny_config(corpus_dir, **{"train.max_steps": "60", "train.eval_every": "0", "train.lr": "1e-2"})
    first = stages.train(tiny_config(corpus_dir, **{"train.max_steps": "1"}), copy_run(src, tmp_path / "one"))
    last = stages.train(cfg, run)
    assert last["val_loss"] < first["val_loss"] - 1.0, (first["val_loss"], last["val_loss"])
    assert last["val_bpb"] < first["val_bpb"]
    assert last["train_tokens"] == 60 * cfg.train.micro_batch_size * cfg.train.seq_len
    assert 0 < last["mfu"] < 1 and last["tokens_per_s"] > 0


def _weights(run):
    return load_file(str(checkpoint_dirs(run.checkpoints)[-1] / "model.safetensors"))


def straight_and_resumed(cfg, src, tmp_path, cut: int):
    """Final weights of a run straight through, and of one saved after `cut` steps and resumed (with
    the global RNG disturbed in between): what a bitwise-resume test compares."""
    from kiln.stages import parts_for
    from kiln.train.build import build_trainer

    straight, resumed = copy_run(src, tmp_path / "straight"), copy_run(src, tmp_path / "resumed")
    build_trainer(cfg, straight, parts_for(cfg)).fit()
    first = build_trainer(cfg, resumed, parts_for(cfg))
    for _ in range(cut):
        first.train_step()
    first.save()
    torch.manual_seed(99)
    build_trainer(cfg, resumed, parts_for(cfg), resume=True).fit()
    return _weights(straight), _weights(resumed)


def test_resume_is_bitwise_identical(tokenized_run, tmp_path, corpus_dir):
    from kiln.stages import parts_for
    from kiln.train.build import build_trainer

    _, src = tokenized_run
    cfg = tiny_config(
        corpus_dir,
        **{
            "train.max_steps": "12",
            "train.eval_every": "0",
            "train.checkpoint_every": "0",
            "train.grad_accum_steps": "2",
        },
    )
    straight = copy_run(src, tmp_path / "straight")
    stages.train(cfg, straight)

    resumed = copy_run(src, tmp_path / "resumed")
    first = build_trainer(cfg, resumed, parts_for(cfg))
    for _ in range(6):
        first.train_step()
    first.save()
    torch.manual_seed(1234)  # a fresh process would not share RNG state; the checkpoint must restore it
    second = build_trainer(cfg, resumed, parts_for(cfg), resume=True)
    assert second.step == 6 and second.loader.samples_seen == first.loader.samples_seen
    second.fit()

    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps = [r["step"] for r in map(__import__("json").loads, resumed.metrics.read_text().splitlines()) if "loss" in r]
    assert steps == list(range(7, 13)), "metrics of the resumed part follow on from the checkpoint"


def test_checkpoints_are_kept_last_k(tokenized_run, tmp_path, corpus_dir):
    _, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    stages.train(
        tiny_config(
            corpus_dir,
            **{
                "train.max_steps": "8",
                "train.checkpoint_every": "2",
                "train.keep_checkpoints": "2",
                "train.eval_every": "0",
            },
        ),
        run,
    )
    assert [p.name for p in checkpoint_dirs(run.checkpoints)] == ["step_6", "step_8"]
    assert not list(run.checkpoints.glob(".tmp_*"))
    files = {p.name for p in (run.checkpoints / "step_8").iterdir()}
    assert files == {
        "dcp",
        "model.safetensors",
        "rng_rank0.safetensors",
        "state.json",
        "config.json",
        "tokenizer.json",
        "manifest.json",
    }


@pytest.mark.parametrize("schedule", ["cosine", "wsd"])
def test_schedules_warm_up_and_decay(schedule):
    lrs = [lr_at(s, 100, 10, schedule, 0.2, 0.1) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert min(lrs) >= 0.1 - 1e-9 and lrs[-1] < 0.2
    assert all(b <= a + 1e-12 for a, b in zip(lrs[10:], lrs[11:])), "no increase after warmup"
    if schedule == "wsd":
        assert lrs[79] == 1.0 and lrs[81] < 1.0


def test_bf16_trains_and_resumes_bitwise_on_any_cpu(tokenized_run, tmp_path, corpus_dir):
    """The suite trains in fp32 everywhere (tiny_config); bf16, which `auto` picks on AMX and Zen 4, is
    trained here on every CPU, AVX2-only ones included (slowly: 12 tiny steps)."""
    _, src = tokenized_run
    cfg = tiny_config(
        corpus_dir,
        **{"train.max_steps": "12", "train.precision": "bf16", "train.eval_every": "0", "train.checkpoint_every": "0"},
    )
    straight, resumed = straight_and_resumed(cfg, src, tmp_path, cut=6)
    for name in straight:
        assert torch.equal(straight[name], resumed[name]), name
    assert all(w.dtype == torch.float32 for w in straight.values())  # the saved weights stay fp32
    run = tmp_path / "straight"
    losses = [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
    assert len(losses) == 12 and sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.1  # it learns
    assert json.loads((run / "checkpoints" / "step_12" / "config.json").read_text())["train"]["precision"] == "bf16"


def test_a_run_can_start_from_another_runs_weights(tokenized_run, tmp_path, corpus_dir):
    from kiln.stages import parts_for
    from kiln.train.build import build_trainer

    _, src = tokenized_run
    first = copy_run(src, tmp_path / "first")
    stages.train(tiny_config(corpus_dir, **{"train.max_steps": "4", "train.eval_every": "0"}), first)
    start = checkpoint_dirs(first.checkpoints)[-1]
    cfg = tiny_config(corpus_dir, **{"train.max_steps": "2", "train.init_from": str(start)})
    trainer = build_trainer(cfg, copy_run(src, tmp_path / "second"), parts_for(cfg))
    weights = load_file(str(start / "model.safetensors"))
    assert trainer.step == 0 and all(torch.equal(trainer.model.state_dict()[k], v) for k, v in weights.items())
