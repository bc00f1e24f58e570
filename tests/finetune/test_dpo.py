"""DPO: pairs travel together, the first loss is log 2 against the reference, only the policy learns,
a LoRA policy's reference is its base, and a run raises held-out preference accuracy and resumes bitwise."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from kiln.cli import main
from kiln.finetune.dpo import DPO, PreferenceData, sequence_logprobs
from kiln.finetune.items import IGNORE, ItemLoader, ItemValidation
from kiln.finetune.lora import LoRALinear, apply_lora, lora_disabled
from kiln.models.build import build_model
from kiln.report import read_metrics
from kiln.tokenizer import load_tokenizer, objective_ids
from tests.finetune.conftest import sigterm_at
from tests.models.test_spec import tiny

GOOD = ["the union is strong", "liberty and justice", "peace and trade"]
BAD = ["the union is weak", "tyranny and ruin", "war and debt"]


def write_pairs(path, n=48):
    with path.open("w") as f:
        for i in range(n):
            k = i % 3
            f.write(json.dumps({"prompt": f"question {i}: what is our state", "chosen": GOOD[k], "rejected": BAD[k]}))
            f.write("\n")
    return path


def test_pairs_stay_together_and_targets_are_the_answers(tokenized_run, tmp_path):
    _, run = tokenized_run
    tok = load_tokenizer(run.tokenizer)
    ids = objective_ids(tok)
    data = PreferenceData(write_pairs(tmp_path / "p.jsonl"), tok, ids, 256, 0.2)
    assert data.train.rows_per_item == 2 and data.width < 256
    raw = ItemLoader(data.train, 4, seed=0).next_batch()
    inputs, targets = raw["inputs"], raw["targets"]
    assert inputs.shape == (4, data.width)
    for row, want in ((0, "chosen"), (1, "rejected")):
        answer = tok.decode([t for t in targets[row].tolist() if t != IGNORE])
        assert answer.strip() in (GOOD if want == "chosen" else BAD)
    assert torch.equal(inputs[0, :5], inputs[1, :5])  # one prompt, two answers
    with pytest.raises(Exception, match="multiple of 2"):
        ItemLoader(data.train, 3, seed=0)
    batches = list(ItemValidation(data.val).batches(data.width, 4))
    assert sum(len(b["inputs"]) for b in batches) == 2 * data.num_examples["val"]


def test_first_loss_is_log2_and_only_the_policy_learns():
    torch.manual_seed(0)
    policy = build_model(tiny(vocab_size=97), torch.device("cpu"))
    reference = build_model(tiny(vocab_size=97), torch.device("cpu")).requires_grad_(False)
    reference.load_state_dict(policy.state_dict())
    inputs = torch.randint(5, 97, (4, 10))
    targets = inputs.roll(-1, 1).clone()
    targets[:, :4] = IGNORE
    dpo = DPO(beta=0.5, reference=reference)
    loss, metrics = dpo.loss(policy, {"inputs": inputs, "targets": targets})
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6) and metrics["reward_margin"].abs() < 1e-6
    loss.backward()
    assert all(p.grad is None for p in reference.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    # the margin is beta x the difference of the log-ratios, by hand
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01 * torch.randn_like(p))
        chosen, rejected = dpo.rewards(policy, {"inputs": inputs, "targets": targets})
        lp, lr = sequence_logprobs(policy(inputs), targets), sequence_logprobs(reference(inputs), targets)
    assert torch.allclose(chosen, 0.5 * (lp - lr)[0::2]) and torch.allclose(rejected, 0.5 * (lp - lr)[1::2])


def test_a_lora_policy_uses_its_base_as_reference():
    torch.manual_seed(0)
    model = build_model(tiny(vocab_size=97), torch.device("cpu")).eval()
    tokens = torch.randint(5, 97, (2, 8))
    with torch.no_grad():
        base = model(tokens)
    apply_lora(model, ["wqkv", "wo"], rank=2, alpha=4.0, dropout=0.0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRALinear):
                m.lora_b.normal_()
        adapted = model(tokens)
        with lora_disabled(model):
            assert torch.equal(model(tokens), base)
        assert torch.equal(model(tokens), adapted)  # the adapters come back
    assert not torch.allclose(adapted, base)


@pytest.mark.parametrize("lora", [False, True])
def test_dpo_raises_heldout_preference_and_resumes_bitwise(pretrained, tmp_path, lora, capsys):
    data = write_pairs(tmp_path / "p.jsonl")
    common = ["finetune", "--checkpoint", str(pretrained), "--method", "dpo", "--data", str(data)]
    steps = "--train.max_steps 12 --train.eval_every 6 --train.checkpoint_every 6 --train.warmup_steps 2"
    steps = [*steps.split(), "--finetune.dpo_beta", "0.5", "--finetune.val_fraction", "0.25"]
    steps += ["--train.precision", "fp32"]  # the held-out accuracy on every CPU, not bf16's rounding on AMX
    steps += ["--train.lr", "1e-3", "--finetune.lora_rank", "4"] if lora else ["--train.lr", "3e-3"]
    assert main([*common, "--run-dir", str(tmp_path / "full"), *steps]) == 0
    train, val, _ = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert math.isclose(train[0]["loss"], math.log(2), rel_tol=1e-4)  # the policy starts as its reference
    assert val[-1]["val_loss"] < math.log(2) and val[-1]["val_preference_accuracy"] > 0.5
    assert val[-1]["val_reward_margin"] > 0 and "reward_margin" in train[-1]
    config = json.loads((tmp_path / "full" / "config.json").read_text())
    assert config["train"]["seq_len"] < 256  # rows fitted to the longest pair
    if lora:
        return
    with sigterm_at(4):
        assert main([*common, "--run-dir", str(tmp_path / "cut"), *steps]) == 130
    assert main([*common, "--run-dir", str(tmp_path / "cut"), *steps, "--resume"]) == 0
    a = load_file(str(tmp_path / "full" / "checkpoints" / "step_12" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "checkpoints" / "step_12" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert np.isfinite([r["loss"] for r in train]).all()
    capsys.readouterr()
