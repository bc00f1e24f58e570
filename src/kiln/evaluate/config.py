"""Evaluation settings: the `eval` section (no heavy imports). Sampling's (`sample`) are the
model's: models/config.py."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.config import require


@dataclass
class EvalConfig:
    """What `kiln run` evaluates after training (beyond loss and bits-per-byte)."""

    tasks: str = "kiln"
    """Downstream tasks and suites (evaluate/suites.py): e.g. "kiln", "core-small,kiln"; "" for none.
    The standard ones need `pip install -e ".[eval]"`; without it they are skipped with a note."""
    limit: int = 0
    """Items per task (0: each suite's own limit)."""
    bias: bool = True
    """Run the paired-sentence bias probes (evaluate/bias.py)."""

    def __post_init__(self) -> None:
        require(self.limit >= 0, f"eval.limit={self.limit} must be >= 0")
