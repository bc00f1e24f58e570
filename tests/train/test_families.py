"""Every model family trains through the CLI (loss drops), resumes bitwise-identically and generates."""

import json

import pytest
import torch

from kiln.cli import main
from kiln.tokenizer import load_tokenizer
from tests.conftest import copy_run, tiny_config
from tests.train.test_trainer import straight_and_resumed

FAMILIES = {
    "encoder": {"model.family": "encoder"},
    "encdec": {"model.family": "encdec"},
    "hybrid": {
        "model.family": "hybrid",
        "model.ssm.attn_every": "2",
        "model.ssm.head_dim": "16",
        "model.moe.num_experts": "4",
    },
    "moe_fim": {"model.moe.num_experts": "4", "objective.causal.fim_rate": "0.5"},
}


def _flags(overrides: dict[str, str]) -> list[str]:
    return [x for k, v in overrides.items() for x in (f"--{k}", v)]


@pytest.mark.parametrize("family", FAMILIES)
def test_loss_drops_through_the_cli_and_the_model_generates(family, tokenized_run, tmp_path, capsys):
    _, src = tokenized_run
    runs = {}
    for steps in (1, 40):
        run = copy_run(src, tmp_path / f"run{steps}")
        args = {**FAMILIES[family], "train.max_steps": str(steps), "train.eval_every": "0", "train.lr": "1e-2"}
        assert main(["train", "--run-dir", str(run.root), "--overwrite", *_flags(args)]) == 0
        runs[steps] = json.loads(run.stages.read_text())["train"]
    first, last = runs[1], runs[40]
    assert last["val_loss"] < first["val_loss"] - 0.5, (family, first["val_loss"], last["val_loss"])
    assert last["family"] == FAMILIES[family].get("model.family", "decoder")
    metrics = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    if "model.moe.num_experts" in FAMILIES[family]:
        assert "moe_aux_loss" in metrics[0] and 0.25 <= metrics[-2]["expert_load_max"] <= 1
    if family == "encoder":
        assert 0 <= last["val_masked_accuracy"] <= 1 and last["val_pseudo_perplexity"] > 1
    capsys.readouterr()
    checkpoint = run.checkpoints / "step_40"
    prompt = {"encoder": "The state of the <|mask|> is strong", "encdec": "The state of the <|sentinel_0|> is"}
    given = prompt.get(family, "The state")
    args = ["generate", "--checkpoint", str(checkpoint), "--prompt", given, "--sample.max_new_tokens", "8"]
    assert main(args) == 0
    out = capsys.readouterr().out.strip()
    # the model wrote something: the mask filled, the span written, or the prompt continued
    marker = {"encoder": "<|mask|>", "encdec": "<|sentinel_0|>"}.get(family)
    if marker:
        head, tail = given.split(marker)
        assert marker not in out and out.startswith(head.strip()) and out != (head + tail).strip()
    else:
        tok = load_tokenizer(run.tokenizer)
        assert out.startswith(given) and len(tok.encode(out).ids) > len(tok.encode(given).ids)
    assert main(["eval", "--checkpoint", str(checkpoint)]) == 0
    assert json.loads(capsys.readouterr().out)["loss"] > 0


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("family", FAMILIES)
def test_resume_is_bitwise_identical_for_every_family(family, precision, tokenized_run, tmp_path, corpus_dir):
    """In fp32 with gradient accumulation, and in bf16 (what `auto` picks on AMX and Zen 4; each family
    casts its own parts: experts, state-space scans, cross-attention) for fewer steps, which an
    AVX2-only CPU runs ~100x slower."""
    _, src = tokenized_run
    steps, accumulation = ("8", "2") if precision == "fp32" else ("4", "1")
    cfg = tiny_config(
        corpus_dir,
        **FAMILIES[family],
        **{
            "train.max_steps": steps,
            "train.eval_every": "0",
            "train.checkpoint_every": "0",
            "train.grad_accum_steps": accumulation,
            "train.precision": precision,
        },
    )
    a, b = straight_and_resumed(cfg, src, tmp_path, cut=int(steps) // 2)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), family
    config = json.loads((tmp_path / "straight" / "checkpoints" / f"step_{steps}" / "config.json").read_text())
    assert config["train"]["precision"] == precision
