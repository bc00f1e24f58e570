"""Sequence classification: a linear head on pooled states, for decoders and encoders alike.

Data: `{"text": ..., "label": ...}` lines. A text is encoded as <|bos|> text <|eos|> (cut to the
row width, keeping the <|eos|>); the labels are the training file's distinct values in sorted
order (saved as finetune.labels). The model gets `classifier`, an nn.Linear(dim, labels) that
starts at zero (so the first loss is log K), attached beside the family's blocks; ClassifierView is
the module the trainer calls: the family's final hidden states through the head, (B, T, K).
Pooling: causal families read the state at <|eos|> (the one position that has seen the whole text;
its row's target holds the label, every other target is -100), the encoder the mean over the text's
positions (the head is linear, so the mean of the per-position logits is the head of the mean state).

A checkpoint keeps the head in classifier.safetensors, apart from model.safetensors, which stays
the plain language model that eval, generate and export read. `confusion` scores held-out items
into a confusion matrix (rows: true label, columns: predicted).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from torch import nn

from kiln.device import autocast
from kiln.errors import KilnError
from kiln.finetune.items import IGNORE, Rows, read_jsonl, split_items, stack_rows, string
from kiln.finetune.method import Method
from kiln.models.base import TokenModel
from kiln.models.registry import family
from kiln.objectives.base import Batch, Objective, TokenScores, with_aux
from kiln.staging import write_whole
from kiln.tokenizer import SpecialIds, literal

if TYPE_CHECKING:
    from kiln.runconfig import RunConfig

HEAD = "classifier"
"""The head's attribute name on the model (and the prefix of its tensors)."""


def parse_labelled(rec: dict[str, Any]) -> dict[str, str]:
    text, label = string(rec, "text"), string(rec, "label", numbers=True)
    if not text.strip() or not label:
        raise ValueError("empty text or label")
    return {"text": text, "label": label}


class ClassifyData:
    """A labelled file (and optionally a held-out file) encoded once into one-row items."""

    def __init__(
        self,
        path: Path,
        tok: Tokenizer,
        ids: SpecialIds,
        seq_len: int,
        val_fraction: float,
        val_path: str = "",
        labels: list[str] | None = None,
    ) -> None:
        expected = 'a labelled text {"text", "label"}'
        items = read_jsonl(path, parse_labelled, expected)
        held = read_jsonl(Path(val_path), parse_labelled, expected) if val_path else None
        train, val = split_items(items, val_fraction, held, path)
        self.labels = list(labels) if labels else sorted({x["label"] for x in train})
        if len(self.labels) < 2:
            raise KilnError(f"{path}: classification needs at least 2 labels; found {self.labels}")
        unknown = sorted({x["label"] for x in train + val} - set(self.labels))
        if unknown:
            raise KilnError(f"{path}: labels {unknown} are not among the training labels {self.labels}")
        self.num_examples = {"train": len(train), "val": len(val)}
        index = {name: i for i, name in enumerate(self.labels)}
        text_tok = literal(tok)  # a labelled text quoting "<|eos|>" is text
        encoded = {
            split: [self._row(text_tok, ids, x["text"], index[x["label"]]) for x in rows]
            for split, rows in (("train", train), ("val", val))
        }
        self.width = min(seq_len, max(len(row[0][0]) for rows in encoded.values() for row in rows))
        self.cut = sum(len(row[0][0]) > self.width for rows in encoded.values() for row in rows)
        self.train = stack_rows([self._fit(r, ids) for r in encoded["train"]], self.width, ids.pad)
        self.val = stack_rows([self._fit(r, ids) for r in encoded["val"]], self.width, ids.pad)

    @staticmethod
    def _row(tok: Tokenizer, ids: SpecialIds, text: str, label: int) -> list[tuple[list[int], list[int]]]:
        tokens = [ids.bos, *tok.encode(text, add_special_tokens=False).ids, ids.eos]
        return [(tokens, [IGNORE] * (len(tokens) - 1) + [label])]

    def _fit(self, item: list[tuple[list[int], list[int]]], ids: SpecialIds) -> list[tuple[list[int], list[int]]]:
        """Cut a row to the width, keeping <|eos|> and the label at its end."""
        tokens, targets = item[0]
        if len(tokens) <= self.width:
            return item
        return [(tokens[: self.width - 1] + [ids.eos], [IGNORE] * (self.width - 1) + [targets[-1]])]

    def describe(self) -> str:
        cut = f"; {self.cut} cut to {self.width} tokens" if self.cut else ""
        return (
            f"classifying into {len(self.labels)} labels ({', '.join(self.labels)}): "
            f"{self.num_examples['train']} texts, {self.num_examples['val']} held out{cut}"
        )


def attach_classifier(model: TokenModel, num_labels: int) -> nn.Linear:
    """Give `model` a zero-initialised head on its final hidden states."""
    if not hasattr(model, "hidden"):
        raise KilnError(
            f"classification reads a family's final hidden states; {type(model).__name__} has none "
            "(use a decoder, hybrid or encoder checkpoint)"
        )
    head = nn.Linear(model.cfg.dim, num_labels, device=model.embed.weight.device)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    model.add_module(HEAD, head)
    return head


class ClassifierView(nn.Module):
    """The module the trainer calls for classification: tokens (B, T) -> label logits (B, T, K)."""

    def __init__(self, model: TokenModel) -> None:
        super().__init__()
        self.model = model

    def repeated_blocks(self) -> list[nn.ModuleList]:
        return self.model.repeated_blocks()

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.model.hidden(tokens)  # type: ignore[operator]
        return getattr(self.model, HEAD)(hidden)


class Classification(Objective):
    """Cross-entropy of the pooled label logits; "accuracy" is the share of texts classified right."""

    name = "classify"
    accuracy_name = "accuracy"

    def __init__(self, pool: str, pad: int) -> None:
        super().__init__(None, None)
        assert pool in ("last", "mean"), pool
        self.pool, self.pad = pool, pad

    def make_batch(self, raw: Batch, gen: torch.Generator) -> Batch:
        return raw

    def pooled(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(label logits (B, K) in fp32, labels (B,))."""
        logits = model(batch["inputs"]).float()  # (B, T, K)
        scored = batch["targets"] != IGNORE
        labels = batch["targets"].masked_fill(~scored, 0).sum(dim=1)
        if self.pool == "last":
            rows = torch.arange(len(logits), device=logits.device)
            return logits[rows, scored.int().argmax(dim=1)], labels
        text = (batch["inputs"] != self.pad).unsqueeze(-1)
        return (logits * text).sum(1) / text.sum(1).clamp(min=1), labels

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logits, labels = self.pooled(model, batch)
        metrics = {"accuracy": (logits.detach().argmax(-1) == labels).float().mean()}
        return with_aux(model, F.cross_entropy(logits, labels), metrics)

    def score(self, model: nn.Module, batch: Batch) -> TokenScores:
        logits, labels = self.pooled(model, batch)
        losses = F.cross_entropy(logits, labels, reduction="none")
        return TokenScores(losses, torch.ones_like(losses), labels, logits.argmax(-1) == labels)


def split_head(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(the language model's tensors, the classification head's) of a state dict."""
    head = {k: v for k, v in weights.items() if k.split(".", 1)[0] == HEAD}
    return {k: v for k, v in weights.items() if k not in head}, head


@torch.no_grad()
def confusion(
    objective: Classification,
    view: nn.Module,
    rows: Rows,
    batch_size: int,
    device: torch.device,
    precision: str,
) -> list[list[int]]:
    """counts[true][predicted] over the held-out items."""
    k = getattr(view.model if isinstance(view, ClassifierView) else view, HEAD).out_features
    counts = torch.zeros(k, k, dtype=torch.long)
    was_training = view.training
    view.eval()
    for start in range(0, len(rows), batch_size):
        batch = {k: v.to(device) for k, v in rows.take(slice(start, start + batch_size)).items()}
        with autocast(device, precision):
            logits, labels = objective.pooled(view, batch)
        for t, p in zip(labels.tolist(), logits.argmax(-1).tolist()):
            counts[t, p] += 1
    view.train(was_training)
    return counts.tolist()


def confusion_table(labels: list[str], counts: list[list[int]]) -> str:
    """A markdown confusion matrix with per-label recall and the overall accuracy."""
    total = sum(map(sum, counts))
    right = sum(counts[i][i] for i in range(len(labels)))
    lines = [
        "| true \\ predicted | " + " | ".join(labels) + " | recall |",
        "| --- |" + " ---: |" * (len(labels) + 1),
    ]
    for i, name in enumerate(labels):
        n = sum(counts[i])
        recall = f"{counts[i][i] / n:.1%}" if n else "-"
        lines.append(f"| {name} | " + " | ".join(str(c) for c in counts[i]) + f" | {recall} |")
    lines.append(f"\naccuracy {right}/{total} = {right / max(total, 1):.1%}")
    return "\n".join(lines) + "\n"


HEAD_FILE = "classifier.safetensors"


def load_classify(cfg: RunConfig, tok: Tokenizer, ids: SpecialIds) -> ClassifyData:
    ft = cfg.finetune
    return ClassifyData(Path(ft.data), tok, ids, cfg.train.seq_len, ft.val_fraction, ft.val_data, ft.labels or None)


def _head(cfg: RunConfig, model: TokenModel, data: Any, state: dict[str, Any]) -> tuple[nn.Module, str]:
    head = attach_classifier(model, len(data.labels))
    return ClassifierView(
        model
    ), f"classification head {cfg.model.dim} -> {head.out_features} labels, zero at the start"


def _split(weights: dict[str, torch.Tensor]) -> dict[str, dict[str, torch.Tensor]]:
    lm, head = split_head(weights)
    return {"model.safetensors": lm, HEAD_FILE: head}


def classification_report(checkpoint: Path, out: Path, device_name: str = "auto") -> dict[str, Any]:
    """The held-out confusion matrix of a classification checkpoint: classification.json and .md in `out`."""
    from kiln.device import pick_device
    from kiln.evaluate.load import load_checkpoint
    from kiln.tokenizer import objective_ids

    device = pick_device(device_name)
    loaded = load_checkpoint(Path(checkpoint), device)
    cfg = loaded.cfg
    head_file = Path(checkpoint) / "classifier.safetensors"
    if cfg.finetune.objective != "classify" or not head_file.exists():
        raise KilnError(f"{checkpoint} is not a classification checkpoint (no classifier.safetensors)")
    ids = objective_ids(loaded.tokenizer)
    data = load_classify(cfg, loaded.tokenizer, ids)
    head = attach_classifier(loaded.model, len(cfg.finetune.labels))
    head.load_state_dict(_head_state(head_file))
    view = ClassifierView(loaded.model)
    objective = Classification(family(cfg.model.family).pooling, ids.pad)
    counts = confusion(objective, view, data.val, cfg.train.micro_batch_size, device, loaded.precision)
    total, right = sum(map(sum, counts)), sum(counts[i][i] for i in range(len(counts)))
    result = {
        "checkpoint": str(checkpoint),
        "labels": cfg.finetune.labels,
        "confusion": counts,
        "accuracy": right / max(total, 1),
        "items": total,
        "majority_baseline": max(map(sum, counts)) / max(total, 1),
    }
    result["summary"] = (
        f"held-out accuracy {result['accuracy']:.1%} on {total} texts (majority label "
        f"{result['majority_baseline']:.1%}); confusion matrix in {out / 'classification.md'}"
    )
    out.mkdir(parents=True, exist_ok=True)
    write_whole(out / "classification.json", json.dumps(result, indent=2) + "\n")
    table = confusion_table(cfg.finetune.labels, counts)
    write_whole(
        out / "classification.md",
        f"# Held-out classification, {checkpoint}\n\n{table}\nmajority-label baseline "
        f"{result['majority_baseline']:.1%}\n",
    )
    return result


def _head_state(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    from kiln.finetune.classify import HEAD

    try:
        tensors = load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for a truncated or corrupt file
        raise KilnError(
            f"{path} is corrupt or truncated ({str(e).splitlines()[0]}); use an earlier checkpoint"
        ) from None
    return {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith(HEAD + ".")}


METHOD = Method(
    name="classify",
    help='a head on pooled states (a causal LM reads its <|eos|> state, an encoder the mean); {"text", "label"}',
    fits=lambda spec: bool(spec.pooling),
    load=load_classify,
    objective=lambda cfg, ids, state: Classification(family(cfg.model.family).pooling, ids.pad),
    rows_of_one=True,
    head=_head,
    split=_split,
    after=classification_report,
)
