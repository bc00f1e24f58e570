"""A modality beyond text as one object: the steps it adds to curation, tokenization, training and
evaluation. stages.py, run.py and evaluate/ call the active ones' steps and know none by name; a
new modality (audio) is one package with its MODALITY and one line in MODALITIES.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

    from kiln.runconfig import RunConfig
    from kiln.rundir import RunDir
    from kiln.staging import Publication
    from kiln.train.parts import Parts


@dataclass(frozen=True)
class Modality:
    name: str
    """Its key in stages.json, summary.json and the evaluation figures."""
    active: Callable[[RunConfig], bool]
    """Whether a config trains on it."""
    check: Callable[[RunConfig], None]
    """What the rest of the config must be for it (a model that reads it, tokens for it): one-line errors."""
    curate: Callable[[RunConfig, RunDir, Publication], dict[str, Any]]
    """`kiln curate`'s step for it: its curated set in the run directory, published with the stage's
    other folders (kiln/staging.py); the figures for stages.json."""
    curated: Callable[[RunDir], bool]
    """Whether its curated set is there (a resumed `kiln run` skips the step)."""
    texts: Callable[[RunDir], Iterator[str]]
    """Its training split's text, for the tokenizer to learn besides the corpus."""
    tokenize: Callable[[RunConfig, RunDir, Tokenizer, str, Publication], dict[str, Any]]
    """`kiln tokenize`'s step (tokenizer, its sha256, the stage's publication): its shards; the figures
    for stages.json."""
    tokenized: Callable[[RunDir], bool]
    parts: Callable[[RunConfig], Parts]
    """The trainer's parts for a run on it (train/parts.py)."""
    evaluate: Callable[[Path, Any, torch.device], dict[str, Any]]
    """(checkpoint, its loaded model or None, device) -> its figures after training and by `kiln eval`."""
    summary: Callable[[dict[str, Any]], dict[str, Any]]
    """Its figures -> the few summary.json carries."""
    table: Callable[[dict[str, Any]], str]
    """Its figures as markdown, for the report and the model card."""
    title: str = ""
    """Its section's heading in the report."""
    data_card: Callable[[RunDir], Path] | None = None
    """Where its curation's data card is in a run directory."""
    evaluate_s: float = 0.0
    """Seconds `kiln run` keeps after training for `evaluate`."""


def modalities() -> dict[str, Modality]:
    """Every modality kiln knows."""
    from kiln.images.modality import MODALITY as IMAGES

    return {m.name: m for m in (IMAGES,)}


def active(cfg: RunConfig) -> list[Modality]:
    """The modalities `cfg` trains on, checked against the rest of the config."""
    found = [m for m in modalities().values() if m.active(cfg)]
    for m in found:
        m.check(cfg)
    return found
