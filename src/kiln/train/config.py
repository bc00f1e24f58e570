"""Training's settings: the `train`, `adamw`, `muon` and `parallel` sections.

Plain dataclasses with no heavy imports, so reading a config never loads torch or the trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from kiln.config import require

ZERO = {
    "eval_every": "only at the end",
    "checkpoint_every": "only at the end",
    "threads": "torch's default",
}
"""What 0 means for the train fields where it is allowed, for their error messages."""


@dataclass
class TrainConfig:
    seq_len: int = 512
    """Tokens per training sequence (at most model.max_seq_len)."""
    micro_batch_size: int = 8
    """Sequences per forward/backward on each rank."""
    grad_accum_steps: int = 1
    """Micro-batches summed per optimizer step; global batch = micro * accum * ranks."""
    max_steps: int = 1000
    """Optimizer steps to run (the schedule's horizon); with a time budget, the most the plan may choose."""
    lr: float = 0.0
    """Peak learning rate; 0 derives it from the model width (derived.lr_for_width)."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    warmup_steps: int = 50
    """Linear warmup steps."""
    schedule: Literal["cosine", "wsd"] = "wsd"
    """cosine (warmup + cosine decay) or wsd (warmup, stable, decay over the last decay_fraction)."""
    decay_fraction: float = 0.3
    """wsd only: fraction of steps spent in the final linear decay."""
    optimizer: Literal["adamw", "muon"] = "adamw"
    """adamw: AdamW for every parameter (the adamw section). muon: Muon for the blocks' weight
    matrices (the muon section, train/muon.py), AdamW at train.lr for embeddings, the head, norms and
    scalars."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 disables)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """auto: bf16 autocast (fp32 master weights) where bf16 matmuls measure faster than fp32 on this
    device (on CUDA: where supported), else fp32; the choice is printed and kept in plan.json."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    seed: int = 0
    """Seeds weight init and data order."""
    eval_every: int = 100
    """Validate every this many steps (and at the end); 0 only at the end."""
    eval_windows: int = 64
    """Validation sequences per periodic evaluation (the final one uses all)."""
    tensorboard: bool = True
    """Also write TensorBoard event files to <run>/tensorboard when the tensorboard package is installed."""
    checkpoint_every: int = 500
    """Checkpoint every this many steps (and at the end)."""
    keep_checkpoints: int = 2
    """Keep the newest this many checkpoints."""
    compile: bool = False
    """torch.compile the training step (evaluation stays eager: its shapes would recompile). It costs a
    compilation once and then faster steps; where that pays within a budget, and on which CPUs, is in
    docs/benchmarks.md."""
    threads: int = 0
    """CPU threads for torch (0 keeps torch's default: one per core)."""
    global_batch_size: int = 0
    """Sequences per optimizer step over all ranks; when set, grad_accum_steps is derived from it so the
    batch (and the sequence of training tokens) stays the same at any world size. 0: micro * accum * ranks."""
    max_bad_steps: int = 3
    """Consecutive steps with a non-finite loss or gradient (each skipped) before rolling back to the
    last checkpoint with a lower learning rate."""
    rollback_lr_factor: float = 0.5
    """Learning-rate multiplier applied at each rollback."""
    async_checkpoint: bool = False
    """Write checkpoints in a background thread (DCP async_save on an in-memory copy) while training
    continues; each is published when the next save starts or training ends."""
    spike_factor: float = 2.0
    """Log a loss spike when a step's loss exceeds this multiple of its running mean."""
    init_from: str = ""
    """A checkpoint directory (checkpoints/step_N) whose weights start this run; the optimizer, the
    schedule and the step count start afresh (continued pretraining, fine-tuning). Ignored on resume."""
    time_budget_s: float = 0.0
    """Wall-clock seconds for the whole training stage, validation and checkpoints included: after the
    first warmup steps the trainer measures its step time and fixes max_steps (and the schedule) to
    fit. 0: no budget. `kiln run` sets it from its own budget."""
    size_from_budget: bool = False
    """With a time budget: choose model.depth on the size dial for the tokens the budget affords."""
    tokens_per_param: float = 0.3
    """size_from_budget: the largest depth whose affordable training tokens (at the step rate the
    planner measures: eager steps, times the compiled step's measured speedup when train.compile is
    on) reach this many per parameter. Chosen with kiln's recipe on the built-in corpus's development
    tenth at the cpu budget (docs/experiments.md, 2026-12-05 and -06), in the tokens per parameter the
    runs achieved: in bf16 on a Zen 4 depth 4 (0.43) beat depth 3 (1.3) and depth 5 (0.16) on two
    seeds; at half that speed (fp32, AVX2 code paths) depth 3 (0.75) beat depth 4 (0.24) by 0.036.
    The crossover lies between 0.24 and 0.43: 0.3 sits inside it."""

    def __post_init__(self) -> None:
        for name in ("seq_len", "micro_batch_size", "grad_accum_steps", "max_steps"):
            require(getattr(self, name) > 0, f"train.{name}={getattr(self, name)} must be positive")
        require(self.lr >= 0, f"train.lr={self.lr} must be positive (or 0 to derive it from the width)")
        require(
            0 <= self.time_budget_s < math.inf and 0 < self.tokens_per_param < math.inf,
            "train.time_budget_s must be finite and >= 0, train.tokens_per_param finite and > 0",
        )
        require(0 <= self.min_lr_ratio <= 1, f"train.min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        require(0 < self.decay_fraction <= 1, f"train.decay_fraction={self.decay_fraction} must be in (0, 1]")
        require(self.warmup_steps >= 0, f"train.warmup_steps={self.warmup_steps} must be >= 0")
        require(self.keep_checkpoints >= 1, f"train.keep_checkpoints={self.keep_checkpoints} must be >= 1")
        require(
            self.global_batch_size >= 0 and self.max_bad_steps >= 1, "train.global_batch_size >= 0, max_bad_steps >= 1"
        )
        require(0 < self.rollback_lr_factor <= 1, "train.rollback_lr_factor must be in (0, 1]")
        for name in ("eval_every", "checkpoint_every", "threads"):
            require(getattr(self, name) >= 0, f"train.{name}={getattr(self, name)} must be >= 0 (0: {ZERO[name]})")
        require(self.eval_windows > 0, f"train.eval_windows={self.eval_windows} must be positive")
        require(self.grad_clip >= 0, f"train.grad_clip={self.grad_clip} must be >= 0 (0: no clipping)")
        require(self.spike_factor > 1, f"train.spike_factor={self.spike_factor} must be above 1")


@dataclass
class AdamWConfig:
    """AdamW: every parameter with train.optimizer adamw; the embeddings, head, norms and scalars with
    muon. Its peak rate is train.lr (the schedule's)."""

    beta1: float = 0.9
    beta2: float = 0.95
    weight_decay: float = 0.1
    """Decoupled weight decay on matrices (embeddings and the head too), not on norms or biases."""
    embed_lr: float = 0.0
    """train.optimizer muon: the rate of the untied input embedding and of the value embeddings
    (model.value_embeds) (0: train.lr); the head and the rest train at train.lr."""
    scalar_lr: float = 0.0
    """train.optimizer muon with model.residual_scalars: the per-layer scalars' rate (0: train.lr)."""

    def __post_init__(self) -> None:
        for name in ("beta1", "beta2"):
            require(0 <= getattr(self, name) < 1, f"adamw.{name}={getattr(self, name)} must be in [0, 1)")
        for name in ("weight_decay", "embed_lr", "scalar_lr"):
            require(getattr(self, name) >= 0, f"adamw.{name}={getattr(self, name)} must be >= 0")


@dataclass
class MuonConfig:
    """Muon for the blocks' weight matrices when train.optimizer is muon (train/muon.py)."""

    lr: float = 0.02
    """Peak learning rate of the Muon group (the schedule moves it with train.lr)."""
    momentum: float = 0.95
    """Nesterov momentum."""
    weight_decay: float = 0.0
    """Decoupled weight decay of the Muon group."""
    momentum_warmup: int = 0
    """Steps over which the momentum rises linearly from 0.85 to muon.momentum (0: from the first step)."""
    polar_express: bool = False
    """Orthogonalise with Polar Express's per-step coefficients, not the fixed quintic."""
    normalize: bool = False
    """NorMuon: a per-neuron second moment (muon.beta2) that evens out the orthogonalised update's rows."""
    beta2: float = 0.95
    """normalize: the second moment's decay."""

    def __post_init__(self) -> None:
        require(self.lr > 0, f"muon.lr={self.lr} must be positive")
        for name in ("momentum", "beta2"):
            require(0 <= getattr(self, name) < 1, f"muon.{name}={getattr(self, name)} must be in [0, 1)")
        for name in ("weight_decay", "momentum_warmup"):
            require(getattr(self, name) >= 0, f"muon.{name}={getattr(self, name)} must be >= 0")


@dataclass
class ParallelConfig:
    mode: Literal["none", "ddp", "fsdp", "hsdp"] = "none"
    """none (one process), ddp (replicated weights), fsdp (FSDP2: weights, gradients and optimizer
    state sharded) or hsdp (replicate x shard on a 2-D mesh)."""
    replicas: int = 0
    """hsdp: replica groups (the mesh's first dimension); 0 uses one per node (WORLD_SIZE / LOCAL_WORLD_SIZE)."""
    activation_checkpointing: Literal["none", "block"] = "none"
    """Recompute each block's activations in the backward pass instead of storing them."""
    timeout_s: int = 300
    """Collective timeout: a rank that dies makes the others stop with an error after this long."""

    def __post_init__(self) -> None:
        require(
            self.mode in ("none", "ddp", "fsdp", "hsdp"), f"parallel.mode={self.mode!r} must be none, ddp, fsdp or hsdp"
        )
        require(self.replicas >= 0 and self.timeout_s > 0, "parallel.replicas must be >= 0 and parallel.timeout_s > 0")
