"""A fine-tuning method as one object: what it reads, what it changes in the model, what it trains.

Each method's file ends with its METHOD (sft.py, dpo.py, classify.py) and finetune/methods.py lists
them; finetune/parts.py turns the one a config names into the trainer's parts. A new method is one
file with a METHOD and one line in methods.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer
    from torch import nn

    from kiln.finetune.items import Rows
    from kiln.models.base import TokenModel
    from kiln.models.spec import FamilySpec
    from kiln.objectives.base import Objective
    from kiln.runconfig import RunConfig
    from kiln.tokenizer import SpecialIds


class Data(Protocol):
    """A method's examples, encoded: training and held-out rows, and a line that describes them."""

    train: Rows
    val: Rows

    def describe(self) -> str: ...


@dataclass(frozen=True)
class Method:
    name: str
    """The value of finetune.objective (and of `kiln finetune --method`)."""
    help: str
    """One line for `kiln finetune --help`: what it trains, on which JSONL records."""
    fits: Callable[[FamilySpec], bool]
    """Whether a family can be fine-tuned so (SFT and DPO need a causal LM, classification pooled states)."""
    load: Callable[[RunConfig, Tokenizer, SpecialIds], Data]
    """finetune.data (and finetune.val_data) encoded into rows."""
    objective: Callable[[RunConfig, SpecialIds, dict[str, Any]], Objective]
    """The training objective, given what `prepare` and `head` left in the run's state."""
    rows_of_one: bool = False
    """A row holds one example (a pair, a labelled text): train.seq_len becomes the longest row."""
    prepare: Callable[[RunConfig, TokenModel, dict[str, Any]], str] | None = None
    """Before adapters go on: e.g. DPO's frozen reference copy (into the state); returns a note."""
    head: Callable[[RunConfig, TokenModel, Data, dict[str, Any]], tuple[nn.Module, str]] | None = None
    """After adapters: a module around the model the trainer calls instead (a classification head),
    and a note."""
    split: Callable[[dict[str, torch.Tensor]], dict[str, dict[str, torch.Tensor]]] | None = None
    """Weights this method adds, taken out of the language model's into files of their own."""
    after: Callable[[Path, Path], dict[str, Any]] | None = None
    """After training, on the final checkpoint and the run directory: a report (classification's
    held-out confusion matrix), printed and returned."""
    defaults: dict[str, Any] | None = None
    """Config overrides this method starts from (a command-line override wins)."""
