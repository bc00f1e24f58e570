"""`kiln finetune`: a checkpoint, a file of chat examples and the one trainer.

The run directory gets the checkpoint's tokenizer and a config made from the checkpoint's own
(its model, objective and tokenizer, unchanged) with the fine-tuning settings applied: the data
file, the checkpoint as train.init_from, no time budget or budget-sized depth, no task evaluation
(kiln's own tasks are made from pretraining text), and unless given on the command line: 200 steps,
a warmup of 20, and the learning rate the checkpoint trained with, divided by 10 for full
fine-tuning (LoRA keeps it: its update starts at zero). Everything else (checkpoints, resume,
distributed modes, metrics.jsonl, the report) is the trainer's, unchanged.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kiln.config import apply_overrides, from_dict, replace, save_config
from kiln.errors import KilnError
from kiln.runconfig import RunConfig
from kiln.rundir import CONFIG, TOKENIZER, RunDir

LORA_DEFAULT_RANK = 8


def finetune_config(checkpoint: Path, data: Path, method: str, overrides: dict[str, Any]) -> RunConfig:
    """The fine-tuning config for `checkpoint` on `data` (method sft or lora), with `overrides`."""
    checkpoint = Path(checkpoint)
    if not (checkpoint / CONFIG).exists():
        raise KilnError(f"{checkpoint} is not a kiln checkpoint (no {CONFIG}); pass a checkpoints/step_N directory")
    if not Path(data).is_file():  # before the run directory is made
        raise KilnError(f"--data {data} is not a file; pass a JSONL of chat examples")
    base = from_dict(RunConfig, json.loads((checkpoint / CONFIG).read_text()))
    if base.model.family not in ("decoder", "hybrid"):
        raise KilnError(f"kiln finetune trains causal LMs (decoder, hybrid); this checkpoint is {base.model.family}")
    lora = method == "lora" or int(overrides.get("finetune.lora_rank", 0) or 0) > 0
    rank = int(overrides.get("finetune.lora_rank") or (LORA_DEFAULT_RANK if lora else 0))
    lr = float(overrides["train.lr"]) if "train.lr" in overrides else base.train.lr / (1 if lora else 10)
    cfg = replace(
        base,
        preset="finetune",
        budget_s=0.0,
        finetune=replace(base.finetune, data=str(data), lora_rank=rank),
        train=replace(
            base.train,
            init_from=str(checkpoint),
            max_steps=200,
            warmup_steps=20,
            lr=lr,
            time_budget_s=0.0,
            size_from_budget=False,
            eval_tasks="",
            eval_every=20,
            checkpoint_every=100,
        ),
    )
    rest = {k: v for k, v in overrides.items() if k not in ("train.lr", "finetune.lora_rank")}
    return apply_overrides(cfg, rest)


def prepare_run(cfg: RunConfig, checkpoint: Path, run: RunDir) -> None:
    """The fine-tuning run directory: the checkpoint's tokenizer beside the config."""
    run.root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(Path(checkpoint) / TOKENIZER, run.tokenizer)
    save_config(cfg, run.config)
