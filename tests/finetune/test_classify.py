"""Classification: the head starts at log K, pooling reads the right positions, a decoder and an
encoder learn a separable set, the run writes a confusion matrix and keeps the LM checkpoint plain."""

import json
import math
import random

import pytest
import torch
from safetensors.torch import load_file

from kiln.cli import main
from kiln.errors import KilnError
from kiln.finetune.classify import (
    Classification,
    ClassifierView,
    ClassifyData,
    attach_classifier,
    confusion_table,
)
from kiln.finetune.items import IGNORE, ItemLoader
from kiln.models.build import build_model
from kiln.tokenizer import load_tokenizer, objective_ids
from tests.models.test_spec import tiny

WORDS = {"peace": ["treaty", "harmony", "friendship", "commerce"], "war": ["battle", "army", "enemy", "navy"]}


def write_labelled(path, n=60, seed=0):
    rng = random.Random(seed)
    with path.open("w") as f:
        for i in range(n):
            label = ["peace", "war"][i % 2]
            words = rng.choices(WORDS[label], k=4) + rng.choices(["the", "and", "of", "our"], k=4)
            rng.shuffle(words)
            f.write(json.dumps({"text": " ".join(words), "label": label}) + "\n")
    return path


def test_rows_put_the_label_at_eos_and_bad_labels_are_refused(tokenized_run, tmp_path):
    _, run = tokenized_run
    tok = load_tokenizer(run.tokenizer)
    ids = objective_ids(tok)
    data = ClassifyData(write_labelled(tmp_path / "c.jsonl"), tok, ids, 256, 0.2)
    assert data.labels == ["peace", "war"]
    raw = ItemLoader(data.train, 4, seed=0).next_batch()
    inputs, targets = raw["inputs"], raw["targets"]
    for row in range(4):
        scored = (targets[row] != IGNORE).nonzero().flatten().tolist()
        assert len(scored) == 1 and inputs[row, scored[0]] == ids.eos and targets[row, scored[0]] in (0, 1)
    short = ClassifyData(tmp_path / "c.jsonl", tok, ids, 6, 0.2)
    assert short.cut and short.width == 6 and (short.train.inputs[:, 0, -1] == ids.eos).all()
    (tmp_path / "held.jsonl").write_text(json.dumps({"text": "a navy", "label": "truce"}) + "\n")
    with pytest.raises(KilnError, match="not among the training labels"):
        ClassifyData(tmp_path / "c.jsonl", tok, ids, 64, 0.2, str(tmp_path / "held.jsonl"))


@pytest.mark.parametrize("family", ["decoder", "encoder"])
def test_a_head_learns_a_separable_set(family):
    torch.manual_seed(0)
    model = build_model(tiny(vocab_size=97, family=family, num_layers=2), torch.device("cpu"))
    attach_classifier(model, 2)
    view = ClassifierView(model)
    objective = Classification("mean" if family == "encoder" else "last", pad=0)
    # label 1 texts contain token 50; label 0 texts never do; the label sits at the last position
    inputs = torch.randint(5, 40, (32, 12))
    labels = torch.arange(32) % 2
    inputs[labels == 1, torch.randint(0, 11, (16,))] = 50
    targets = torch.full_like(inputs, IGNORE)
    targets[:, -1] = labels
    batch = {"inputs": inputs, "targets": targets}
    loss, _ = objective.loss(view, batch)
    assert math.isclose(loss.item(), math.log(2), rel_tol=1e-6)  # a zero head
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    # to convergence, not a fixed step count: the last steps of a fixed budget can land on a
    # non-monotone stretch, and AMX/AVX-512 kernels sum in another order than AVX2's
    for _ in range(400):
        loss, _ = objective.loss(view, batch)
        if loss.item() < 0.005:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.005, f"did not converge: loss {loss.item():.4f}"
    view.eval()
    with torch.no_grad():  # scored apart from training, with a margin
        logits, truth = objective.pooled(view, batch)
    right = logits.gather(1, truth[:, None]).squeeze(1)
    wrong = logits.gather(1, (1 - truth)[:, None]).squeeze(1)
    assert (right - wrong).min().item() > 1.0  # every text, by a margin (mean loss 0.005: each p > 0.85)


def test_encoder_decoder_has_no_hidden_states_to_pool():
    model = build_model(tiny(vocab_size=97, family="encdec", num_layers=2), torch.device("cpu"))
    with pytest.raises(KilnError, match="final hidden states"):
        attach_classifier(model, 2)


def test_confusion_table_counts():
    table = confusion_table(["a", "b"], [[3, 1], [0, 4]])
    assert "| a | 3 | 1 | 75.0% |" in table and "accuracy 7/8 = 87.5%" in table


def test_classify_run_reaches_heldout_accuracy_and_keeps_the_lm_plain(pretrained, tmp_path, capsys):
    data = write_labelled(tmp_path / "c.jsonl", n=80)
    held = write_labelled(tmp_path / "held.jsonl", n=20, seed=1)
    args = ["finetune", "--checkpoint", str(pretrained), "--method", "classify", "--data", str(data)]
    args += ["--finetune.val_data", str(held), "--run-dir", str(tmp_path / "cls")]
    args += "--train.max_steps 30 --train.eval_every 10 --train.warmup_steps 2 --train.lr 3e-3".split()
    args += ["--train.precision", "fp32"]  # the accuracy after 30 steps, not bf16's rounding on AMX or Zen 4
    assert main(args) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "cls" / "classification.json").read_text())
    assert report["labels"] == ["peace", "war"] and report["items"] == 20
    assert report["accuracy"] >= 0.9 and "held-out accuracy" in out
    step = tmp_path / "cls" / "checkpoints" / "step_30"
    head = load_file(str(step / "classifier.safetensors"))
    assert set(head) == {"classifier.weight", "classifier.bias"} and head["classifier.weight"].abs().sum() > 0
    lm = load_file(str(step / "model.safetensors"))
    assert not any(k.startswith("classifier") for k in lm)
    # still a language model: model.safetensors alone loads as one and continues text
    capsys.readouterr()
    assert main(["generate", "--checkpoint", str(step), "--prompt", "the union", "--sample.max_new_tokens", "8"]) == 0
    written = capsys.readouterr().out.strip()
    tok = load_tokenizer(step / "tokenizer.json")
    assert written.startswith("the union") and len(tok.encode(written).ids) > len(tok.encode("the union").ids)
    assert sum(map(sum, report["confusion"])) == 20
