"""Resume checks what it resumes: shape and tokenizer changes are refused without touching the run
directory; schedule and data-order changes go ahead with a warning naming what they change."""

import json

from kiln.cli import main
from kiln.presets import get_preset
from kiln.train.resume import check_resume
from tests.conftest import copy_run

TINY = [
    "--train.max_steps",
    "4",
    "--train.eval_every",
    "0",
    "--train.checkpoint_every",
    "2",
    "--train.precision",
    "fp32",
]


def _trained(tokenized_run, tmp_path):
    cfg, src = tokenized_run
    run = copy_run(src, tmp_path / "run")
    from kiln.config import save_config

    save_config(cfg, run.config)
    assert main(["train", "--run-dir", str(run.root), *TINY]) == 0
    return run


def test_a_refused_resume_names_the_difference_and_leaves_config_json(tokenized_run, tmp_path, capsys):
    run = _trained(tokenized_run, tmp_path)
    before = run.config.read_bytes()
    capsys.readouterr()
    assert main(["train", "--run-dir", str(run.root), "--resume", "auto", "--model.num_layers", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "model.num_layers: checkpoint 2, now 3" in err and "--overwrite" in err
    assert run.config.read_bytes() == before
    # the run directory still resumes as it was
    assert main(["train", "--run-dir", str(run.root), "--resume", "auto", "--train.max_steps", "6"]) == 0


def test_a_data_order_change_resumes_with_a_warning(tokenized_run, tmp_path, capsys):
    run = _trained(tokenized_run, tmp_path)
    capsys.readouterr()
    assert (
        main(
            [
                "train",
                "--run-dir",
                str(run.root),
                "--resume",
                "auto",
                "--train.micro_batch_size",
                "4",
                "--train.max_steps",
                "6",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "resume: global batch: checkpoint 8 sequences a step, now 4" in out
    assert "resume: train.max_steps: checkpoint 4, now 6 (changes the schedule" in out
    assert json.loads(run.config.read_text())["train"]["micro_batch_size"] == 4


def test_auto_precision_and_a_planned_step_count_come_from_the_checkpoint():
    requested = get_preset("debug")
    trained = get_preset("debug")
    trained.train.precision, trained.train.max_steps = "fp32", 17
    settled, warnings = check_resume(
        requested, trained, planned_steps=True, requested_batch=8, trained_batch=8, checkpoint="ckpt"
    )
    assert settled.train.precision == "fp32" and settled.train.max_steps == 17 and warnings == []
    settled, warnings = check_resume(
        requested, trained, planned_steps=False, requested_batch=8, trained_batch=8, checkpoint="ckpt"
    )
    assert settled.train.max_steps == 30 and any("train.max_steps: checkpoint 17, now 30" in w for w in warnings)


def test_a_checkpoint_does_not_resume_as_another_kind_of_training():
    """A pretraining checkpoint resumed under a fine-tuning config (or one fine-tuning run under another's
    data) would be trained over and pruned away: refused, naming the difference."""
    import pytest

    from kiln.config import replace
    from kiln.errors import KilnError

    trained = get_preset("debug")
    requested = replace(trained, finetune=replace(trained.finetune, data="chat.jsonl", objective="sft"))
    with pytest.raises(KilnError, match="kind of training: finetune.data: checkpoint '', now 'chat.jsonl'"):
        check_resume(requested, trained, planned_steps=False, requested_batch=8, trained_batch=8, checkpoint="c")
    spelled = replace(requested, finetune=replace(requested.finetune, data="./chat.jsonl"))
    check_resume(spelled, requested, planned_steps=False, requested_batch=8, trained_batch=8, checkpoint="c")
    lora = replace(requested, finetune=replace(requested.finetune, lora_rank=8))
    with pytest.raises(KilnError, match="finetune.lora_rank: checkpoint 0, now 8"):
        check_resume(lora, requested, planned_steps=False, requested_batch=8, trained_batch=8, checkpoint="c")


def test_overwrite_refuses_to_start_from_a_checkpoint_it_would_delete(tokenized_run, tmp_path, capsys):
    run = _trained(tokenized_run, tmp_path)
    start = run.checkpoints / "step_4"
    capsys.readouterr()
    args = ["train", "--run-dir", str(run.root), "--overwrite", "--train.init_from", str(start), *TINY]
    assert main(args) == 2
    assert "one of the checkpoints --overwrite deletes" in capsys.readouterr().err
    assert (start / "model.safetensors").exists()


def test_a_bf16_run_resumed_on_a_cpu_where_bf16_is_slow_goes_on_in_fp32(tokenized_run, tmp_path, capsys, monkeypatch):
    """A checkpoint records the precision its machine chose; resumed on a CPU where bf16 is ~100x slower
    (AVX2 only), `auto` measures again and warns instead of going on 100x slower; where bf16 is still
    faster, the checkpoint's precision stands (a bitwise resume)."""
    import kiln.train.plan as plan_module
    from kiln.train.manifest import write_manifest
    from kiln.train.precision import MatmulRates

    run = _trained(tokenized_run, tmp_path)
    step_4 = run.checkpoints / "step_4"
    config = json.loads((step_4 / "config.json").read_text())
    config["train"]["precision"] = "bf16"  # as an AMX machine would have trained it
    (step_4 / "config.json").write_text(json.dumps(config))
    (step_4 / "manifest.json").unlink()
    write_manifest(step_4)
    resume = ["train", "--run-dir", str(run.root), "--resume", "auto", "--train.precision", "auto"]
    # faster, or slower by a busy moment's margin (the machine that trained it): the checkpoint's bf16 stands
    monkeypatch.setattr(plan_module, "probe_matmul_rates", lambda device: MatmulRates(1e11, 0.8e11, 256))
    capsys.readouterr()
    assert main([*resume, "--train.max_steps", "5"]) == 0
    assert "now 'fp32'" not in capsys.readouterr().out
    assert json.loads((run.checkpoints / "step_5" / "config.json").read_text())["train"]["precision"] == "bf16"
    monkeypatch.setattr(plan_module, "probe_matmul_rates", lambda device: MatmulRates(1e11, 1e9, 256))
    assert main([*resume, "--train.max_steps", "6"]) == 0
    assert "train.precision: checkpoint 'bf16', now 'fp32': bf16 runs 100x slower" in capsys.readouterr().out
    assert json.loads((run.checkpoints / "step_6" / "config.json").read_text())["train"]["precision"] == "fp32"


def test_a_crafted_state_or_generator_file_is_refused_in_one_line(tokenized_run, tmp_path, capsys):
    """state.json and the generator states as someone else may hand them over (the manifest rebuilt
    to match): a rate of NaN rolled back forever, the rest gave tracebacks."""
    from safetensors.torch import save_file

    from kiln.train.manifest import write_manifest

    run = _trained(tokenized_run, tmp_path)
    step = run.checkpoints / "step_4"
    state = json.loads((step / "state.json").read_text())
    rng = next(step.glob("rng_rank0.safetensors"))
    import torch

    for crafted in (
        {"lr_scale": float("nan")},
        {"loader": "x"},
        {"tokens_seen": None},
        {"loader": {**state["loader"], "samples_seen": -5}},
        "rng",
    ):
        if crafted == "rng":
            save_file({"cpu": torch.zeros(3)}, str(rng))  # a float vector, no generator's
        else:
            (step / "state.json").write_text(json.dumps({**state, **crafted}))
        write_manifest(step)
        capsys.readouterr()
        assert main(["train", "--run-dir", str(run.root), "--resume", "yes", *TINY]) == 2, crafted
        err = capsys.readouterr().err
        assert "Traceback" not in err and "use an earlier" in err, (crafted, err[-500:])
        (step / "state.json").write_text(json.dumps(state))
