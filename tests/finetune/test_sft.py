"""Supervised fine-tuning: answer-only targets, packing that keeps them, the one trainer, resume."""

import json

import pytest
import torch
from safetensors.torch import load_file

from kiln.cli import main
from kiln.errors import KilnError
from kiln.finetune.items import IGNORE, ItemLoader, Rows
from kiln.finetune.sft import encode_example, pack, read_examples, window_rows
from kiln.models.head_loss import linear_cross_entropy
from kiln.objectives.causal import CausalLM
from kiln.report import read_metrics
from kiln.tokenizer import load_tokenizer, objective_ids
from tests.finetune.conftest import sigterm_at


def write_examples(path, n=40):
    with path.open("w") as f:
        for i in range(n):
            if i % 2:
                f.write(json.dumps({"prompt": f"the union is {i}", "response": "strong and free"}) + "\n")
            else:
                msgs = [
                    {"role": "system", "content": "answer briefly"},
                    {"role": "user", "content": f"what shall congress build {i}"},
                    {"role": "assistant", "content": "roads schools and ports"},
                ]
                f.write(json.dumps({"messages": msgs}) + "\n")
    return path


def test_only_assistant_tokens_are_targets_and_packing_keeps_them(tokenized_run, tmp_path):
    _, run = tokenized_run
    tok = load_tokenizer(run.tokenizer)
    ids = objective_ids(tok)
    messages = [{"role": "user", "content": "the union"}, {"role": "assistant", "content": "is strong"}]
    tokens, targets = encode_example(tok, ids, messages)
    answer = [t for t, on in zip(tokens, targets) if on]
    assert tok.decode(answer[:-1]).strip() == "is strong" and answer[-1] == ids.eos
    assert tok.decode(tokens, skip_special_tokens=False).count("<|eos|>") == 1
    assert tokens[0] == ids.bos and not targets[0]
    examples = read_examples(write_examples(tmp_path / "d.jsonl"))
    encoded = [encode_example(tok, ids, e) for e in examples]
    windows, flags = pack(encoded, 256, ids.pad)
    assert (
        windows.shape[1] == 257 and len(windows) < len(encoded) and flags.sum() == sum(sum(t) for _, t in encoded)
    )  # every answer token, once
    rows = window_rows((windows, flags)).take(slice(None))
    inputs, target = rows["inputs"], rows["targets"]
    assert ((target != IGNORE) == torch.from_numpy(flags[:, 1:])).all()
    # the loss is the mean over answer positions only: a prompt token never contributes
    torch.manual_seed(0)
    hidden = torch.randn(*inputs.shape, 16, requires_grad=True)
    head = torch.randn(ids.vocab_size, 16)

    class Fixed(torch.nn.Module):  # final states through kiln's fused head and loss
        def forward(self, tokens, targets):
            return linear_cross_entropy(hidden, head, targets)

    loss, _ = CausalLM().loss(Fixed(), {"inputs": inputs, "targets": target})
    loss.backward()
    prompt = target == IGNORE
    assert hidden.grad[prompt].abs().sum() == 0 and hidden.grad[~prompt].abs().sum() > 0


def test_the_loader_is_deterministic_and_resumable():
    import numpy as np

    rows = Rows(np.arange(10 * 8).reshape(10, 1, 8), np.ones((10, 1, 8), dtype=np.int64))
    a, b = ItemLoader(rows, 3, seed=1), ItemLoader(rows, 3, seed=1)
    first = [a.next_batch()["inputs"] for _ in range(5)]
    b.load_state_dict({"samples_seen": 6, "seed": 1})
    assert torch.equal(b.next_batch()["inputs"], first[2])
    assert a.epoch == 1.5


def test_bad_lines_are_one_clear_error(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "response": "b"}\n{"messages": [{"role": "user", "content": "x"}]}\n')
    with pytest.raises(KilnError, match=r"bad.jsonl:2: .*roles must be"):
        read_examples(path)
    path.write_text('{"prompt": "a"}\n')
    with pytest.raises(KilnError, match=r"bad.jsonl:1: not a chat example"):
        read_examples(path)
    for line, says in [
        ('{"prompt": null, "response": "b"}', "prompt must be a string, not None"),  # not the text "None"
        ('{"prompt": ["a"], "response": "b"}', "prompt must be a string"),
        ('{"prompt": ' + "[" * 5000 + "]" * 5000 + ', "response": "b"}', "RecursionError"),  # nested too deep
    ]:
        path.write_text(line + "\n")
        with pytest.raises(KilnError, match=says):
            read_examples(path)


def test_a_class_label_is_text_or_a_whole_number(tmp_path):
    from kiln.finetune.classify import parse_labelled

    assert parse_labelled({"text": "a", "label": 1}) == parse_labelled({"text": "a", "label": "1"})
    for label in (1.0, None, True):
        with pytest.raises(TypeError, match="label must be a string or a whole number"):
            parse_labelled({"text": "a", "label": label})


@pytest.mark.parametrize("method", ["sft", "lora"])
def test_finetuning_lowers_the_answer_loss_and_resumes_bitwise(pretrained, tmp_path, method, capsys):
    data = write_examples(tmp_path / "d.jsonl")
    common = ["finetune", "--checkpoint", str(pretrained), "--method", method, "--data", str(data)]
    steps = "--train.max_steps 12 --train.eval_every 4 --train.checkpoint_every 6 --train.warmup_steps 2"
    steps = [*steps.split(), "--train.lr", "3e-3"]
    assert main([*common, "--run-dir", str(tmp_path / "full"), *steps]) == 0
    _, val, _ = read_metrics(tmp_path / "full" / "metrics.jsonl")
    assert val[-1]["val_loss"] < val[0]["val_loss"]
    full = load_file(str(tmp_path / "full" / "checkpoints" / "step_12" / "model.safetensors"))
    if method == "lora":
        adapters = load_file(str(tmp_path / "full" / "checkpoints" / "step_12" / "adapter.safetensors"))
        assert adapters and all(".lora_" in k for k in adapters)
        base = load_file(str(pretrained / "model.safetensors"))
        assert torch.equal(full["embed.weight"], base["embed.weight"])  # frozen: only adapted layers move
    # stopped half-way by SIGTERM, then resumed: the same weights
    with sigterm_at(4):
        assert main([*common, "--run-dir", str(tmp_path / "cut"), *steps]) == 130
    assert main([*common, "--run-dir", str(tmp_path / "cut"), *steps, "--resume"]) == 0
    cut = load_file(str(tmp_path / "cut" / "checkpoints" / "step_12" / "model.safetensors"))
    assert all(torch.equal(full[k], cut[k]) for k in full)
    capsys.readouterr()
    # exported, the fine-tuned model carries its chat template: transformers renders the same tokens
    transformers = pytest.importorskip("transformers")
    assert (
        main(
            [
                "export",
                "--checkpoint",
                str(tmp_path / "full" / "checkpoints" / "step_12"),
                "--to",
                "hf",
                str(tmp_path / "hf"),
            ]
        )
        == 0
    )
    hf_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    messages = [{"role": "user", "content": "what shall congress build"}, {"role": "assistant", "content": "roads"}]
    tok = load_tokenizer(tmp_path / "full" / "tokenizer.json")
    rendered = hf_tok.apply_chat_template(messages, tokenize=True)
    rendered = rendered if isinstance(rendered, list) else rendered["input_ids"]  # a BatchEncoding in v5
    assert list(rendered) == encode_example(tok, objective_ids(tok), messages)[0]


def test_a_number_option_that_is_no_number_is_one_line(pretrained, tmp_path, capsys):
    data = tmp_path / "chat.jsonl"
    data.write_text('{"prompt": "a", "response": "b"}\n' * 20)
    base = ["finetune", "--checkpoint", str(pretrained), "--data", str(data), "--run-dir", str(tmp_path / "ft")]
    for option in (["--finetune.lora_rank", "abc"], ["--train.lr", "abc"], ["--train.lr", "nan"]):
        capsys.readouterr()
        assert main([*base, *option]) == 2
        assert f"--{option[0][2:]} '{option[1]}': expected a" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()
