"""The run config: every section in one dataclass, saved resolved as config.json in the run directory.

Each section lives in a light module next to the code it configures (models/config.py,
train/config.py, ...); none imports torch, so reading or validating a config is cheap (evaluate/load.py,
`--dry-run`, tools that only inspect a run directory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from kiln.config import derive, require
from kiln.corpus import CorpusConfig
from kiln.curate.config import CurateConfig
from kiln.derived import lr_for_width
from kiln.energy import EnergyConfig
from kiln.evaluate.config import EvalConfig
from kiln.finetune.config import FinetuneConfig
from kiln.images.config import ImageConfig
from kiln.models.config import ModelConfig, SampleConfig
from kiln.objectives.config import ObjectiveConfig
from kiln.shards.config import ShardConfig
from kiln.tokenizer import TokenizerConfig
from kiln.train.config import AdamWConfig, MuonConfig, ParallelConfig, TrainConfig


@dataclass
class RunConfig:
    """Everything a run needs; saved resolved as config.json in the run directory."""

    preset: str = "cpu"
    """Name of the preset this config started from."""
    data: CorpusConfig = field(default_factory=CorpusConfig)
    curate: CurateConfig = field(default_factory=CurateConfig)
    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    adamw: AdamWConfig = field(default_factory=AdamWConfig)
    muon: MuonConfig = field(default_factory=MuonConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    energy: EnergyConfig = field(default_factory=EnergyConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    images: ImageConfig = field(default_factory=ImageConfig)
    budget_s: float = 0.0
    """`kiln run`: wall-clock seconds for the whole pipeline (curation to report); training gets what
    the data stages leave and plans its steps to it. 0: no budget (train.max_steps as given)."""

    def __post_init__(self) -> None:
        require(0 <= self.budget_s < math.inf, f"budget_s={self.budget_s} must be finite and >= 0 (0: no budget)")
        derive(self.train, "lr", lr_for_width(self.model.dim))
        require(
            not (self.train.optimizer == "muon" and self.model.mup_base_dim),
            "train.optimizer=muon scales its updates by each matrix's shape already; use it without model.mup_base_dim",
        )
        require(
            self.train.seq_len <= self.model.max_seq_len,
            f"train.seq_len={self.train.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}; raise the latter",
        )
        require(
            self.model.vocab_size >= self.tokenizer.vocab_size,
            f"model.vocab_size={self.model.vocab_size} is below tokenizer.vocab_size={self.tokenizer.vocab_size}",
        )
