"""Sampling and evaluation settings: the `sample` and `eval` sections (no heavy imports)."""

from __future__ import annotations

from dataclasses import dataclass

from kiln.config import require


@dataclass
class SampleConfig:
    max_new_tokens: int = 200
    """Tokens to generate per prompt."""
    temperature: float = 0.8
    """Softmax temperature; 0 means greedy."""
    top_k: int = 50
    """Keep the k most likely tokens (0 disables)."""
    top_p: float = 0.95
    """Keep the smallest set of tokens whose probability reaches p (1.0 disables)."""
    seed: int = 0
    """Sampling seed: the same seed gives the same text."""
    prompts: str = "Fellow-Citizens of the Senate and House of Representatives:|The state of the Union is|We must"
    """Prompts for `kiln run`'s samples, separated by '|'."""

    def __post_init__(self) -> None:
        require(self.temperature >= 0, f"sample.temperature={self.temperature} must be >= 0")
        require(0 < self.top_p <= 1, f"sample.top_p={self.top_p} must be in (0, 1]")
        require(self.top_k >= 0, f"sample.top_k={self.top_k} must be >= 0")
        require(self.max_new_tokens > 0, f"sample.max_new_tokens={self.max_new_tokens} must be positive")


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
