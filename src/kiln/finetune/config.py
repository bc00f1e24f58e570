"""The finetune section: the fine-tuning objective, its data, and LoRA adapters (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.config import require


@dataclass
class FinetuneConfig:
    data: str = ""
    """A JSONL file to fine-tune on instead of the shards: chat examples ({"messages": [{"role",
    "content"}]}) or prompt/response pairs for sft, {"prompt", "chosen", "rejected"} for dpo,
    {"text", "label"} for classify."""
    objective: str = "sft"
    """The fine-tuning method, a name in finetune/methods.py: sft (loss on the assistant's tokens),
    dpo (preference pairs against a frozen reference), classify (a head on pooled states)."""
    val_fraction: float = 0.1
    """Share of the examples held out for validation (at least one), chosen by a hash of their text."""
    val_data: str = ""
    """A separate JSONL file of held-out examples (same format); set, val_fraction is not used."""
    dpo_beta: float = 0.1
    """DPO's beta: how far the policy's log-ratio to the reference is scaled into a reward."""
    labels: list[str] = field(default_factory=list)
    """classify: the label names, in the head's order (default: the training file's, sorted)."""
    lora_rank: int = 0
    """LoRA rank; 0 fine-tunes every weight."""
    lora_alpha: float = 16.0
    """LoRA scale numerator: the adapter's update is (alpha / rank) x B A."""
    lora_dropout: float = 0.0
    """Dropout on the adapter's input."""
    lora_targets: list[str] = field(default_factory=lambda: ["wqkv", "wo", "w_gate_up", "w_down"])
    """Names of the linear layers that get adapters (attention and MLP projections)."""

    def __post_init__(self) -> None:
        require(0 < self.val_fraction < 1, f"finetune.val_fraction={self.val_fraction} must be in (0, 1)")
        require(self.lora_rank >= 0, f"finetune.lora_rank={self.lora_rank} must be >= 0")
        require(self.dpo_beta > 0, f"finetune.dpo_beta={self.dpo_beta} must be > 0")
        require(0 <= self.lora_dropout < 1, f"finetune.lora_dropout={self.lora_dropout} must be in [0, 1)")
