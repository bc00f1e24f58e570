"""Downstream task scoring: choice and cloze metrics by hand, every family, the offline task files."""

import gzip
import json
import math
import re
from dataclasses import replace

import pytest
import torch
from torch import nn

from kiln.errors import KilnError
from kiln.evaluate.olmo import read_olmo_task
from kiln.evaluate.suites import expand, load_tasks
from kiln.evaluate.tasks import Item, Task, core_mean, results_table, score_task, task_metrics
from kiln.models.build import build_model
from kiln.models.registry import FAMILIES
from kiln.models.spec import Scored
from tests.models.test_spec import SHAPES, tiny
from tests.objectives.test_objectives import IDS


def encode(text: str) -> list[int]:
    """One id per character, above the special ids."""
    return [IDS.num_special + (ord(c) % 200) for c in text]


class Prefers(nn.Module):
    """A hand-built causal LM: every position puts most of its probability on one token."""

    def __init__(self, token: int, vocab: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(vocab))
        with torch.no_grad():
            self.bias[token] = 5.0

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.bias.expand(*tokens.shape, len(self.bias))


def test_choice_scoring_picks_the_continuation_the_model_prefers():
    b = encode("b")[0]
    model = Prefers(b, IDS.vocab_size)
    task = Task(
        "t",
        "choice",
        (
            Item(("Q:",) * 3, (" aaa", " bbb", " ccc"), gold=1),
            Item(("Q:",) * 2, (" bb", " ab"), gold=0),
            Item(("Q:",) * 2, (" ba", " ca"), gold=1),  # the model is wrong here
        ),
    )
    result = score_task(task, FAMILIES["decoder"], model, encode, IDS, "fp32", 64, progress=False)
    assert result["acc"] == pytest.approx(2 / 3) and result["items"] == 3
    # the gold continuation's bits per byte from the model's own log-probabilities
    logp = torch.log_softmax(model.bias, -1)
    gold = [3 * logp[b], 2 * logp[b], logp[encode("c")[0]] + logp[encode("a")[0]]]
    nats_space = logp[encode(" ")[0]]
    want = sum(-(g + nats_space).item() / (math.log(2) * n) for g, n in zip(gold, (4, 3, 3)))
    assert result["bpb"] == pytest.approx(want / 3, rel=1e-5)


def test_acc_and_acc_norm_match_a_hand_computation():
    task = Task(
        "t",
        "choice",
        (
            # sums: choice 1 wins; per character (-4/2, -5/10): choice 1 wins too
            Item(("c",) * 2, (" a", " longer ch"), gold=1),
            # sums: choice 0 wins (-3 > -6); per char: -3/2 = -1.5 vs -6/10 = -0.6 -> choice 1
            Item(("c",) * 2, (" a", " bbbbbbbbb"), gold=1),
        ),
        primary="acc_norm",
    )
    scored = [
        [Scored(-4.0, False), Scored(-5.0, False)],
        [Scored(-3.0, False), Scored(-6.0, False)],
    ]
    # item 1: acc picks 0 (-4 > -5), wrong; acc_norm picks 1, right. item 2: acc wrong, acc_norm right.
    out = task_metrics(task, scored)
    assert out["acc"] == 0.0 and out["acc_norm"] == 1.0
    assert out["chance"] == 0.5 and out["centered"] == 1.0  # primary acc_norm: (1 - .5) / (1 - .5)
    bits = (5.0 / (math.log(2) * 10) + 6.0 / (math.log(2) * 10)) / 2
    assert out["bpb"] == pytest.approx(bits)


def test_centered_accuracy_chance_and_the_suite_mean():
    four = Task("four", "choice", tuple(Item(("c",) * 4, (" a", " b", " c", " d"), gold=0) for _ in range(4)))
    scored = [[Scored(-1.0, False)] + [Scored(-2.0, False)] * 3] * 2 + [
        [Scored(-3.0, False)] + [Scored(-2.0, False)] * 3
    ] * 2
    out = task_metrics(four, scored)
    assert out["acc"] == 0.5 and out["chance"] == 0.25
    assert out["centered"] == pytest.approx((0.5 - 0.25) / 0.75)
    cloze = Task("cloze", "cloze", (Item(("c",), (" x",)), Item(("c",), (" y",))))
    cl = task_metrics(cloze, [[Scored(-1.0, True)], [Scored(-1.0, False)]])
    assert cl["acc"] == 0.5 and cl["chance"] == 0.0 and cl["centered"] == 0.5
    assert core_mean([out, cl]) == pytest.approx(((0.5 - 0.25) / 0.75 + 0.5) / 2)
    assert core_mean([]) is None  # no task scored: null in JSON, not NaN
    assert "CORE-style" in results_table([out, cl])


def test_every_family_scores_a_task():
    """Decoder, MoE and hybrid score continuations directly, the encoder by pseudo-log-likelihood, the
    encoder-decoder as the target span: every one gives a figure per item, the same on a rerun."""
    task = Task(
        "t",
        "choice",
        tuple(Item(("Some context here",) * 2, (" yes", " no"), gold=i % 2) for i in range(6)),
    )
    torch.manual_seed(0)
    for name, spec in FAMILIES.items():
        cfg = (
            tiny(**SHAPES["hybrid"], vocab_size=IDS.vocab_size)
            if name == "hybrid"
            else tiny(family=name, vocab_size=IDS.vocab_size)
        )
        model = build_model(cfg, torch.device("cpu"))
        first = score_task(task, spec, model, encode, IDS, "fp32", 32, progress=False)
        again = score_task(task, spec, model, encode, IDS, "fp32", 32, progress=False)
        assert 0 <= first["acc"] <= 1 and first["bpb"] > 0 and first["bpb"] == again["bpb"], name
        assert model.training, "scoring leaves the model in the mode it found it"


def write_task(root, name, variant, lines, primary="acc_per_char", offset=1000000):
    folder = root / name / variant
    folder.mkdir(parents=True)
    metric_kwargs = {"uncond_docid_offset": offset} if offset else {}
    config = {"task_config": {"primary_metric": primary, "metric_kwargs": metric_kwargs, "split": "validation"}}
    (folder / "config.json").write_text(json.dumps(config))
    with gzip.open(folder / "requests.jsonl.gz", "wt") as f:
        for doc_id, idx, label, ctx, cont in lines:
            request = {"context": ctx, "continuation": cont}
            f.write(json.dumps({"doc_id": doc_id, "idx": idx, "label": label, "request": request}) + "\n")


def test_olmo_request_files_are_read_offline_grouped_by_document(tmp_path):
    write_task(
        tmp_path,
        "hellaswag",
        "rc_0shot",
        [
            (0, 1, 1, "A man", " runs."),
            (0, 0, 1, "A man", " sits."),
            (1000000, 0, 1, "", " sits."),  # OLMo's unconditioned request: left out
            (1, 0, 0, "A dog", " barks."),
            (1, 1, 0, "A dog", " flies."),
        ],
    )
    write_task(
        tmp_path,
        "winogrande",
        "rc_0shot",
        [(0, 0, 1, "Ann so Ann", " left."), (0, 1, 1, "Ann so Bob", " left.")],
        "acc_raw",
        None,
    )
    write_task(
        tmp_path, "lambada", "bpb_0shot", [(0, 0, ["signs"], "I don't care about", " signs")], "logits_per_byte", None
    )
    hs = read_olmo_task("hellaswag", root=tmp_path)
    assert hs.kind == "choice" and hs.primary == "acc_norm" and len(hs.items) == 2
    assert hs.items[0] == Item(("A man", "A man"), (" sits.", " runs."), 1)  # choices in idx order
    assert len(read_olmo_task("hellaswag", root=tmp_path, limit=1).items) == 1
    wg = read_olmo_task("winogrande", root=tmp_path)
    assert wg.primary == "acc" and wg.items[0].contexts == ("Ann so Ann", "Ann so Bob")
    lam = read_olmo_task("lambada", root=tmp_path)
    assert lam.kind == "cloze" and lam.items[0].continuations == (" signs",)
    with pytest.raises(KilnError, match="variants rc_0shot"):
        read_olmo_task("hellaswag", "mc_5shot", root=tmp_path)
    tasks = load_tasks(["hellaswag", "winogrande"], tasks_dir=tmp_path)
    assert [t.name for t in tasks] == ["hellaswag", "winogrande"]


@pytest.mark.parametrize(
    "lines, says",
    [
        ([(0, 0, 7, "A", " b"), (0, 1, 7, "A", " c")], "the label one of them"),  # past the choices
        ([(0, 1, 1, "A", " b"), (0, 2, 1, "A", " c")], "numbered 0..n-1"),  # a gap: the label would shift
        ([(1e999, 0, 0, "A", " b")], "not a loglikelihood request"),
    ],
)
def test_a_task_file_kiln_cannot_score_is_refused_before_scoring(tmp_path, lines, says):
    write_task(tmp_path, "piqa", "rc_0shot", lines)
    with pytest.raises(KilnError, match=says):
        read_olmo_task("piqa", root=tmp_path)


def test_a_task_config_or_line_of_the_wrong_shape_is_one_line(tmp_path):
    write_task(tmp_path, "piqa", "rc_0shot", [(0, 0, 0, "A", " b")])
    config = tmp_path / "piqa" / "rc_0shot" / "config.json"
    for bad, says in (
        ("[1]", "a JSON object"),
        ("{not json", "not a task config"),
        ('{"task_config": {"metric_kwargs": {"uncond_docid_offset": "x"}}}', "is not a number"),
    ):
        config.write_text(bad)
        with pytest.raises(KilnError, match=says):
            read_olmo_task("piqa", root=tmp_path)
    config.unlink()
    with gzip.open(tmp_path / "piqa" / "rc_0shot" / "requests.jsonl.gz", "wt") as f:
        f.write('{"doc_id": 0, "request": {"context": "' + "a" * (2 << 20) + '"}}\n')  # one line of 2M
    with pytest.raises(KilnError, match="a line over"):
        read_olmo_task("piqa", root=tmp_path)


def test_task_names_and_suites_expand_with_limits():
    assert expand(["core-small"]) == [(t, 500) for t in ("hellaswag", "arc_easy", "piqa", "winogrande", "lambada")]
    assert expand(["kiln", "kiln_cloze"], limit=20) == [("kiln_cloze", 20), ("kiln_choice", 20)]
    assert expand(["arc_easy:rc_5shot"]) == [("arc_easy:rc_5shot", 0)]
    with pytest.raises(KilnError, match="unknown task 'helaswag'"):
        expand(["helaswag"])
    with pytest.raises(KilnError, match="held-out text"):
        load_tasks(["kiln_cloze"])


def test_a_missing_package_is_one_clear_error(monkeypatch):
    import importlib.util

    from kiln.evaluate import olmo

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(KilnError, match=re.escape(olmo.INSTALL)):
        olmo.olmo_tasks_dir()


def test_scoring_is_batched_without_changing_figures():
    from kiln.models import decoder

    torch.manual_seed(0)
    model = build_model(tiny(vocab_size=IDS.vocab_size), torch.device("cpu")).eval()
    task = Task(
        "t", "choice", tuple(Item(("ctx " * (i + 1),) * 2, (" a" * (i % 3 + 1), " b"), i % 2) for i in range(20))
    )
    batched = score_task(task, FAMILIES["decoder"], model, encode, IDS, "fp32", 64, progress=False)
    one_at_a_time = replace(
        FAMILIES["decoder"], score=lambda m, reqs, *a: [decoder.score_causal(m, [r], *a)[0] for r in reqs]
    )
    single = score_task(task, one_at_a_time, model, encode, IDS, "fp32", 64, progress=False)
    assert batched["acc"] == single["acc"] and batched["bpb"] == pytest.approx(single["bpb"], rel=1e-5)


def test_a_corrupt_task_file_is_one_clear_error(tmp_path):
    folder = tmp_path / "piqa" / "rc_0shot"
    folder.mkdir(parents=True)
    (folder / "requests.jsonl.gz").write_bytes(b"not gzip")
    with pytest.raises(KilnError, match="corrupt or truncated"):
        read_olmo_task("piqa", root=tmp_path)
