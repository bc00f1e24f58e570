"""The run directory: one place that names every file a run leaves (a stable interface)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from kiln.errors import KilnError

MANIFEST = "manifest.json"
"""What each stage's output folder says of itself: curated/, shards/<split>/, checkpoints/step_N/."""
CONFIG = "config.json"
"""The resolved config: in the run directory, and in each checkpoint (the one it was trained with)."""
TOKENIZER = "tokenizer.json"
"""The tokenizer: in the run directory, and copied into each checkpoint."""
STATE = "state.json"
"""A checkpoint's step, loader position and counters."""
OVERWRITTEN = ".overwritten"
"""What a fresh start (--overwrite) keeps aside until training accepts it (kiln.freshstart)."""


def listed_file(folder: Path, name: object, manifest: Path) -> Path:
    """`folder / name` for a file a stage's manifest lists; refused unless `name` is a plain file name
    (the manifest of a folder handed to kiln names no file elsewhere)."""
    if not isinstance(name, str) or name in ("", ".", "..") or Path(name).name != name or "\\" in name:
        raise KilnError(f"{manifest}: {name!r} is not a file name in its folder")
    return folder / name


BEFORE_CONFIG = {
    "curated",
    "curated_images",
    "tokenizer.json",
    ".staged-tokenizer.json",  # a tokenizer stage stopped while saving (kiln.staging.STAGED)
    "plan.json",
    "shards",
    "stages.json",
    ".staged-stages.json",
    ".staged-config.json",
    ".staged-plan.json",
    "config.json.tmp",  # what an older kiln left
    f"{OVERWRITTEN}-dropped",  # a fresh start's earlier files being deleted (kiln.freshstart)
    f"{OVERWRITTEN}.lock",  # the run directory's lock, taken by a fresh start (kiln.freshstart)
}
"""What a run directory can hold before its config.json is written (a first stage that failed)."""


def is_kiln_config(path: Path) -> bool:
    """Whether `path` is a config.json kiln wrote (a JSON object with its model and train sections)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("model"), dict) and isinstance(data.get("train"), dict)


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @staticmethod
    def of_checkpoint(checkpoint: Path) -> RunDir:
        """The run directory a checkpoints/step_N folder belongs to; a checkpoint elsewhere (copied out
        on its own) is a run directory of one, its own folder: the files a run has beside its
        checkpoints (validation shards, the model card) are then simply absent."""
        checkpoint = Path(checkpoint)
        return RunDir(checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint)

    def check_ours(self) -> None:
        """Refuse (one line) a --run-dir kiln would write over but did not make: an existing file, or a
        folder with files in it that holds neither a kiln config.json nor only what kiln writes first.
        A new or empty folder, or an earlier kiln run, is fine."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise KilnError(f"--run-dir {root} is a file, not a folder; pass a new or existing run directory")
        if not root.exists() or self._begun():
            return
        strangers = sorted(p.name for p in root.iterdir() if p.name not in BEFORE_CONFIG)
        if strangers and not self._begun():  # again: another rank of the launch may have just begun the run
            shown = ", ".join(strangers[:3]) + (", ..." if len(strangers) > 3 else "")
            raise KilnError(
                f"--run-dir {root} is not empty ({shown}) and is not a kiln run directory (no kiln config.json); "
                "kiln would write over its files: pass a new or empty folder"
            )

    def _begun(self) -> bool:
        """A kiln config.json, or a fresh start under way (or one a crash left: kiln.freshstart)."""
        return self.config.exists() and is_kiln_config(self.config) or (self.root / OVERWRITTEN).is_dir()

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
