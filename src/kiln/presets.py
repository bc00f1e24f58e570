"""The run config and its named presets.

A preset is a plain function returning a `RunConfig`. One size dial, `depth`, derives width, heads
and learning rate for the decoder (`decoder_at_depth`), in the spirit of nanochat.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from kiln.config import require
from kiln.corpus import CorpusConfig
from kiln.curate.pipeline import CurateConfig
from kiln.errors import KilnError
from kiln.evaluate.generate import SampleConfig
from kiln.models.config import ModelConfig
from kiln.models.moe import MoEConfig
from kiln.models.ssm import SSMConfig
from kiln.objectives.base import ObjectiveConfig
from kiln.shards.writer import ShardConfig
from kiln.tokenizer import TokenizerConfig
from kiln.train.parallel import ParallelConfig
from kiln.train.trainer import TrainConfig


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
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def __post_init__(self) -> None:
        require(self.train.seq_len <= self.model.max_seq_len,
                f"train.seq_len={self.train.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}; raise the latter")
        require(self.model.vocab_size >= self.tokenizer.vocab_size,
                f"model.vocab_size={self.model.vocab_size} is below tokenizer.vocab_size={self.tokenizer.vocab_size}")


def lr_for_width(dim: int) -> float:
    """Peak AdamW learning rate, scaled as 1/width from GPT-2 small's 6e-4 at width 768."""
    return 6e-4 * 768 / dim


def decoder_at_depth(depth: int, vocab_size: int, seq_len: int, aspect: int = 64, head_dim: int = 64) -> ModelConfig:
    """The size dial: `depth` layers of width aspect * depth (rounded up to head_dim), one head per
    head_dim channels. aspect 64 gives GPT-2's shapes (depth 12 -> 768 wide)."""
    dim = head_dim * -(-aspect * depth // head_dim)
    return ModelConfig(vocab_size=vocab_size, dim=dim, num_layers=depth, num_heads=dim // head_dim,
                         num_kv_heads=dim // head_dim, max_seq_len=seq_len)


def debug() -> RunConfig:
    """Seconds on a CPU: a tiny model on 24 documents; for tests and smoke runs."""
    return RunConfig(
        preset="debug",
        data=CorpusConfig(max_documents=24, val_fraction=0.1),
        tokenizer=TokenizerConfig(vocab_size=512, num_sentinels=8),
        model=ModelConfig(vocab_size=512, dim=64, num_layers=2, num_heads=4, num_kv_heads=2, max_seq_len=64),
        train=TrainConfig(seq_len=64, micro_batch_size=8, max_steps=30, lr=3e-3, warmup_steps=5,
                          eval_every=10, eval_windows=16, checkpoint_every=10),
        sample=SampleConfig(max_new_tokens=24),
    )


def cpu() -> RunConfig:
    """`kiln run`'s default: the best validation bits-per-byte reachable in under 10 minutes on 2 cores."""
    # 4 x 256: at equal wall-clock it beat 4 x 384 on validation bpb (more epochs of the 2.1M-token
    # built-in corpus) while still reaching ~40 % of the bf16 matmul peak. See docs/experiments.md.
    seq_len = 256
    model = decoder_at_depth(4, vocab_size=8192, seq_len=seq_len, aspect=64)
    return RunConfig(
        preset="cpu",
        tokenizer=TokenizerConfig(vocab_size=8192),
        model=model,
        train=TrainConfig(seq_len=seq_len, micro_batch_size=32, max_steps=480, lr=4e-3,
                          warmup_steps=30, eval_every=50, eval_windows=64, checkpoint_every=100),
    )


def gpt2_small() -> RunConfig:
    """GPT-2 small's shape (124M-class, 12 x 768, 1024 context) for one GPU; bring a larger corpus."""
    seq_len = 1024
    model = decoder_at_depth(12, vocab_size=32768, seq_len=seq_len)
    return RunConfig(
        preset="gpt2_small",
        tokenizer=TokenizerConfig(vocab_size=32768),
        model=model,
        train=TrainConfig(seq_len=seq_len, micro_batch_size=32, grad_accum_steps=4, max_steps=5000,
                          lr=lr_for_width(model.dim), warmup_steps=200, eval_every=250, checkpoint_every=1000,
                          compile=True),
    )


def _family(name: str, cfg: RunConfig, lr: float | None = None, **model: object) -> RunConfig:
    cfg.preset = name
    cfg.model = replace(cfg.model, **model)
    if lr is not None:
        cfg.train.lr = lr
    return cfg


def cpu_moe() -> RunConfig:
    """The cpu decoder with 8 experts (top 2, each half the dense width, so active compute matches) on
    every other block."""
    half = cpu().model.hidden_dim // 2
    return _family("cpu_moe", cpu(), moe=MoEConfig(num_experts=8, top_k=2, every=2, expert_hidden_dim=half))


def cpu_hybrid() -> RunConfig:
    """Jamba-style at the cpu size: 4 layers, one attending (1:3; Jamba's 1:7 needs 8 layers), three
    SSM layers, MoE (4 experts, top 2, half width) on every other block."""
    half = cpu().model.hidden_dim // 2
    return _family("cpu_hybrid", cpu(), family="hybrid", ssm=SSMConfig(attn_every=4),
                   moe=MoEConfig(num_experts=4, top_k=2, every=2, expert_hidden_dim=half))


def cpu_encoder() -> RunConfig:
    """BERT-style masked LM at the cpu size."""
    return _family("cpu_encoder", cpu(), lr=2e-3, family="encoder")


def cpu_t5() -> RunConfig:
    """T5-style span corruption at the cpu size: 4 encoder + 4 decoder blocks."""
    return _family("cpu_t5", cpu(), lr=2e-3, family="encdec", num_decoder_layers=4)


PRESETS: dict[str, Callable[[], RunConfig]] = {"debug": debug, "cpu": cpu, "gpt2_small": gpt2_small,
                                               "cpu_moe": cpu_moe, "cpu_hybrid": cpu_hybrid,
                                               "cpu_encoder": cpu_encoder, "cpu_t5": cpu_t5}


def get_preset(name: str) -> RunConfig:
    if name not in PRESETS:
        raise KilnError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]()
