"""The finetune section: supervised fine-tuning data and LoRA adapters (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.config import require


@dataclass
class FinetuneConfig:
    data: str = ""
    """A JSONL file of chat examples ({"messages": [{"role", "content"}]}) or prompt/response pairs
    ({"prompt", "response"}); set, the trainer fine-tunes on it (finetune/sft.py) instead of the shards."""
    val_fraction: float = 0.1
    """Share of the examples held out for validation (at least one), chosen by a hash of their text."""
    lora_rank: int = 0
    """LoRA rank; 0 fine-tunes every weight."""
    lora_alpha: float = 16.0
    """LoRA scale numerator: the adapter's update is (alpha / rank) x B A."""
    lora_dropout: float = 0.0
    """Dropout on the adapter's input."""
    lora_targets: str = "wqkv,wo,w_gate_up,w_down"
    """Comma-separated names of the linear layers that get adapters (attention and MLP projections)."""

    def __post_init__(self) -> None:
        require(0 < self.val_fraction < 1, f"finetune.val_fraction={self.val_fraction} must be in (0, 1)")
        require(self.lora_rank >= 0, f"finetune.lora_rank={self.lora_rank} must be >= 0")
        require(0 <= self.lora_dropout < 1, f"finetune.lora_dropout={self.lora_dropout} must be in [0, 1)")
