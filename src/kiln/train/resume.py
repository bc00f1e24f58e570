"""What a resume may change: the requested config against the one the checkpoint was trained with.

A checkpoint's config.json holds the concrete config its weights were trained with (the precision,
depth and step count the plan chose). Resuming first adopts those for every field the request left
to the machine (`train.precision auto`, a planned step count, a budget-chosen depth), then names each
remaining difference in one line:

- the model's shape or family, or the tokenizer: refused (the weights cannot continue), with the fix;
- what is trained on and how (`finetune.data`, its objective, labels, LoRA adapters): refused (a
  pretraining checkpoint resumed as a fine-tuning run would be fine-tuned over and pruned away);
- the schedule or optimizer (steps, learning rate, warmup, decay...), the batch or data order (global
  batch, sequence length, seed), the precision or the objective: allowed, with a warning that says
  what it changes (the run stops being the uninterrupted one);
- everything else (evaluation and checkpoint cadence, threads, parallel layout, sampling, the data
  stages' settings): allowed silently.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from kiln.config import DERIVED_KEY, replace, to_dict
from kiln.errors import KilnError

if TYPE_CHECKING:
    from kiln.runconfig import RunConfig

SCHEDULE = {
    "train.max_steps",
    "train.lr",
    "train.min_lr_ratio",
    "train.warmup_steps",
    "train.schedule",
    "train.decay_fraction",
    "train.grad_clip",
}
OPTIMIZER = ("adamw.", "muon.")
"""Sections whose every field changes the schedule or the optimizer."""
DATA_ORDER = {"train.seq_len", "train.seed"}
KIND = {"finetune.data", "finetune.objective", "finetune.labels", "finetune.lora_rank", "finetune.lora_targets"}
"""What makes a run another kind of training: a checkpoint of one does not continue as the other."""


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dict -> {dotted name: value}, without the derived-name lists."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key == DERIVED_KEY:
            continue
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def adopt_plan(requested: RunConfig, trained: RunConfig, planned_steps: bool) -> RunConfig:
    """`requested` with the trained config's values for what the request left to the machine."""
    train = requested.train
    changes: dict[str, Any] = {}
    if train.precision == "auto":
        changes["precision"] = trained.train.precision
    if planned_steps:
        changes["max_steps"] = trained.train.max_steps
    out = replace(requested, train=replace(train, **changes)) if changes else requested
    if train.size_from_budget and trained.model.depth:
        out = replace(out, model=replace(out.model, depth=trained.model.depth))
    return out


def compare(
    requested: RunConfig, trained: RunConfig, requested_batch: int, trained_batch: int
) -> tuple[list[str], list[str]]:
    """(refused, warnings): one line per difference that matters (see the module docstring). The
    global batches (sequences per optimizer step over all ranks) are compared, not micro-batch and
    accumulation, which may change with the world size without changing the data order."""
    new, old = flatten(to_dict(requested)), flatten(to_dict(trained))
    refused, warnings = [], []
    for key in sorted(set(new) | set(old)):
        a, b = old.get(key), new.get(key)
        if a == b or (key == "finetune.data" and _same_file(a, b)):
            continue
        change = f"{key}: checkpoint {a!r}, now {b!r}"
        if key.startswith(("model.", "tokenizer.")) or key in KIND:
            refused.append(change)
        elif key in SCHEDULE or key.startswith(OPTIMIZER):
            warnings.append(f"{change} (changes the schedule from here on)")
        elif key in DATA_ORDER:
            warnings.append(f"{change} (changes the order of training data from here on)")
        elif key == "train.precision" or key.startswith("objective."):
            warnings.append(f"{change} (changes the numerics from here on)")
    if requested_batch != trained_batch:
        warnings.append(
            f"global batch: checkpoint {trained_batch} sequences a step, now {requested_batch} "
            "(changes the batch size and the order of training data from here on)"
        )
    return refused, warnings


def check_resume(
    requested: RunConfig,
    trained: RunConfig,
    planned_steps: bool,
    requested_batch: int,
    trained_batch: int,
    checkpoint: str,
) -> tuple[RunConfig, list[str]]:
    """The config to continue with and the warnings to print; raises KilnError naming each refused
    difference when the checkpoint cannot continue under the request."""
    settled = adopt_plan(requested, trained, planned_steps)
    refused, warnings = compare(settled, trained, requested_batch, trained_batch)
    if refused:
        raise KilnError(
            f"cannot resume {checkpoint} with a different model, tokenizer or kind of training: {'; '.join(refused)}. "
            "Drop those overrides to continue it, or start a new run (--overwrite or another --run-dir)"
        )
    return settled, [f"resume: {w}; the run is no longer the uninterrupted one" for w in warnings]


def _same_file(a: object, b: object) -> bool:
    """Two spellings of one data file (`x.jsonl`, `./x.jsonl`, its absolute path), or two files with
    the same bytes (moved since)."""
    if not (isinstance(a, str) and isinstance(b, str) and a and b):
        return False
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.resolve() == pb.resolve():
        return True
    return pa.is_file() and pb.is_file() and pa.read_bytes() == pb.read_bytes()
