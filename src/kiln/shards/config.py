"""Tokenized shards' settings: the `shards` section (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.config import require


@dataclass
class ShardConfig:
    shard_tokens: int = 100_000_000
    """Start a new shard file after this many tokens."""
    batch_bytes: int = 4_000_000
    """Text buffered per `encode_batch` call; bounds memory while tokenizing."""

    def __post_init__(self) -> None:
        require(self.shard_tokens > 0, f"shards.shard_tokens={self.shard_tokens} must be positive")
        require(self.batch_bytes > 0, f"shards.batch_bytes={self.batch_bytes} must be positive")
