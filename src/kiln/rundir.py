"""The run directory: one place that names every file a run leaves (a stable interface)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MANIFEST = "manifest.json"
"""What each stage's output folder says of itself: curated/, shards/<split>/, checkpoints/step_N/."""
CONFIG = "config.json"
"""The resolved config: in the run directory, and in each checkpoint (the one it was trained with)."""
TOKENIZER = "tokenizer.json"
"""The tokenizer: in the run directory, and copied into each checkpoint."""
STATE = "state.json"
"""A checkpoint's step, loader position and counters."""


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / CONFIG

    @property
    def curated(self) -> Path:
        """curated/: documents_NNNNN.jsonl, manifest.json, dropped/, data_card.md/json."""
        return self.root / "curated"

    @property
    def curated_images(self) -> Path:
        """curated_images/: train_NNNNN.tar, val_NNNNN.tar (WebDataset), manifest.json, data_card.md/json."""
        return self.root / "curated_images"

    def image_split(self, name: str) -> Path:
        """Image shard directory of one split: 'train' or 'val' (images/shards.py)."""
        return self.shards / f"images_{name}"

    @property
    def tokenizer(self) -> Path:
        return self.root / TOKENIZER

    @property
    def shards(self) -> Path:
        return self.root / "shards"

    def split(self, name: str) -> Path:
        """Shard directory of one split: 'train' or 'val'."""
        return self.shards / name

    @property
    def plan(self) -> Path:
        """plan.json: what the trainer chose on this machine (precision, depth, steps) and why."""
        return self.root / "plan.json"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    @property
    def evals(self) -> Path:
        """eval/: task tables and bias reports, one per checkpoint evaluated."""
        return self.root / "eval"

    @property
    def model_card(self) -> Path:
        return self.root / "model_card.md"

    @property
    def loss_plot(self) -> Path:
        return self.root / "loss.png"

    @property
    def training_plot(self) -> Path:
        return self.root / "training.png"

    @property
    def samples(self) -> Path:
        return self.root / "samples.txt"

    @property
    def report(self) -> Path:
        return self.root / "report.md"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def stages(self) -> Path:
        """stages.json: what each stage reported (bytes per token, tokenize speed, ...)."""
        return self.root / "stages.json"
