"""`kiln finetune`: a checkpoint, a file of examples and the one trainer (SFT, LoRA, DPO, classify).

The run directory gets the checkpoint's tokenizer and a config made from the checkpoint's own
(its model, objective and tokenizer, unchanged) with the fine-tuning settings applied: the data
file, the checkpoint as train.init_from, no time budget or budget-sized depth, no task evaluation
(kiln's own tasks are made from pretraining text), and unless given on the command line: 200 steps,
a warmup of 20, and the learning rate the checkpoint trained with, divided by 10 for full
fine-tuning (LoRA keeps it: its update starts at zero; so does a random start, `init="random"`,
which keeps the architecture and tokenizer but not the weights). DPO and classification rows hold
one example each, so train.seq_len becomes the longest row. Everything else (checkpoints, resume,
distributed modes, metrics.jsonl, the report) is the trainer's, unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal, cast

from kiln.config import apply_overrides, from_dict, replace, save_config
from kiln.errors import KilnError
from kiln.finetune.config import FinetuneConfig
from kiln.presets import ADAMW_TRAIN
from kiln.runconfig import RunConfig
from kiln.rundir import TOKENIZER, RunDir

LORA_DEFAULT_RANK = 8
CAUSAL = ("decoder", "hybrid")
WITH_HIDDEN = ("decoder", "hybrid", "encoder")


def finetune_config(
    checkpoint: Path, data: Path, method: str, overrides: dict[str, Any], init: str = "checkpoint"
) -> RunConfig:
    """The fine-tuning config for `checkpoint` on `data` (method sft, lora, dpo or classify), with
    `overrides`; `init` "random" keeps the architecture and tokenizer but not the weights."""
    checkpoint = Path(checkpoint)
    from kiln.train.checkpoint import read_config

    config = read_config(checkpoint)
    if not Path(data).is_file():  # before the run directory is made
        raise KilnError(f"--data {data} is not a file; pass a JSONL of examples")
    base = from_dict(RunConfig, config)
    objective = cast(Literal["sft", "dpo", "classify"], "sft" if method == "lora" else method)
    families = WITH_HIDDEN if objective == "classify" else CAUSAL
    if base.model.family not in families:
        raise KilnError(
            f"kiln finetune --method {method} trains {', '.join(families)} models; "
            f"this checkpoint is {base.model.family}"
        )
    lora = method == "lora" or int(overrides.get("finetune.lora_rank", 0) or 0) > 0
    rank = int(overrides.get("finetune.lora_rank") or (LORA_DEFAULT_RANK if lora else 0))
    divisor = 1 if lora or init == "random" else 10  # a random start trains at the pretraining rate
    lr = float(overrides["train.lr"]) if "train.lr" in overrides else base.train.lr / divisor
    cfg = replace(
        base,
        preset="finetune",
        budget_s=0.0,
        finetune=FinetuneConfig(data=str(data), objective=objective, lora_rank=rank),  # none of an earlier one's
        train=replace(
            base.train,
            init_from=str(checkpoint) if init == "checkpoint" else "",
            max_steps=200,
            lr=lr,
            time_budget_s=0.0,
            size_from_budget=False,
            eval_tasks="",
            eval_every=20,
            checkpoint_every=100,
            # fine-tuning's rates are AdamW's, with the settings they were measured with (a checkpoint
            # trained with kiln's Muon recipe has beta1 0.8 and no weight decay); --train.optimizer muon
            # to choose otherwise
            **ADAMW_TRAIN | {"warmup_steps": 20},
        ),
    )
    rest = {k: v for k, v in overrides.items() if k not in ("train.lr", "finetune.lora_rank")}
    cfg = apply_overrides(cfg, rest)
    if objective in ("dpo", "classify"):
        cfg = fit_rows(cfg, checkpoint, "train.seq_len" in overrides)
    return cfg


def fit_rows(cfg: RunConfig, checkpoint: Path, seq_len_given: bool) -> RunConfig:
    """DPO and classification rows are one example each: train.seq_len becomes the longest row
    (rounded up to 8, at most the checkpoint's), and classify's labels are fixed in the config."""
    from kiln.finetune.classify import ClassifyData
    from kiln.finetune.dpo import PreferenceData
    from kiln.finetune.parts import load_data
    from kiln.tokenizer import load_tokenizer, objective_ids

    tokenizer = load_tokenizer(Path(checkpoint) / TOKENIZER)
    data = load_data(cfg, tokenizer, objective_ids(tokenizer))
    assert isinstance(data, PreferenceData | ClassifyData), "rows of one example are DPO's or classify's"
    ft, tc = cfg.finetune, cfg.train
    labels = list(getattr(data, "labels", ft.labels))
    seq_len = tc.seq_len if seq_len_given else min(tc.seq_len, -(-data.width // 8) * 8)
    return replace(cfg, finetune=replace(ft, labels=labels), train=replace(tc, seq_len=seq_len))


def classification_report(checkpoint: Path, out: Path, device_name: str = "auto") -> dict[str, Any]:
    """The held-out confusion matrix of a classification checkpoint: classification.json and .md in `out`."""
    from kiln.device import pick_device
    from kiln.evaluate.load import load_checkpoint
    from kiln.finetune.classify import (
        Classification,
        ClassifierView,
        attach_classifier,
        confusion,
        confusion_table,
        pool_of,
    )
    from kiln.finetune.parts import load_data
    from kiln.tokenizer import objective_ids

    device = pick_device(device_name)
    loaded = load_checkpoint(Path(checkpoint), device)
    cfg = loaded.cfg
    head_file = Path(checkpoint) / "classifier.safetensors"
    if cfg.finetune.objective != "classify" or not head_file.exists():
        raise KilnError(f"{checkpoint} is not a classification checkpoint (no classifier.safetensors)")
    ids = objective_ids(loaded.tokenizer)
    data = load_data(cfg, loaded.tokenizer, ids)
    head = attach_classifier(loaded.model, len(cfg.finetune.labels))
    head.load_state_dict(_head_state(head_file))
    view = ClassifierView(loaded.model)
    objective = Classification(pool_of(cfg.model.family), ids.pad)
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
    out.mkdir(parents=True, exist_ok=True)
    (out / "classification.json").write_text(json.dumps(result, indent=2) + "\n")
    table = confusion_table(cfg.finetune.labels, counts)
    (out / "classification.md").write_text(
        f"# Held-out classification, {checkpoint}\n\n{table}\nmajority-label baseline "
        f"{result['majority_baseline']:.1%}\n"
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


def prepare_run(cfg: RunConfig, checkpoint: Path, run: RunDir) -> None:
    """The fine-tuning run directory: the checkpoint's tokenizer beside the config."""
    run.root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(checkpoint) / TOKENIZER, run.tokenizer)
    save_config(cfg, run.config)
