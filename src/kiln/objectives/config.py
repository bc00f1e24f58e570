"""The objectives' settings, one section each (objective.causal, objective.masked, objective.span).

Plain dataclasses with no heavy imports, so reading a config never loads torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kiln.config import require


@dataclass
class CausalConfig:
    fim_rate: float = 0.0
    """Fraction of sequences turned into fill-in-the-middle (prefix, suffix, middle)."""

    def __post_init__(self) -> None:
        require(0 <= self.fim_rate <= 1, "objective.causal.fim_rate must be in [0, 1]")


@dataclass
class MaskedConfig:
    mask_rate: float = 0.15
    """Fraction of non-special tokens selected for prediction (BERT)."""
    mask_token_frac: float = 0.8
    """Of the selected, the share replaced by <|mask|> (BERT's 80/10/10)."""
    random_token_frac: float = 0.1
    """Of the selected, the share replaced by a random token (the rest stay unchanged)."""
    pseudo_ppl_windows: int = 2
    """Validation windows scored by pseudo-perplexity (one forward per token) at the end."""

    def __post_init__(self) -> None:
        require(0 < self.mask_rate < 1, "objective.masked.mask_rate must be in (0, 1)")
        require(
            0 <= self.mask_token_frac <= 1 and 0 <= self.random_token_frac <= 1,
            "objective.masked.mask_token_frac and random_token_frac must be in [0, 1]",
        )
        require(
            self.mask_token_frac + self.random_token_frac <= 1,
            "objective.masked: mask_token_frac + random_token_frac exceed 1",
        )


@dataclass
class SpanConfig:
    noise_density: float = 0.15
    """Fraction of tokens corrupted into spans (T5)."""
    mean_span_length: float = 3.0
    """Mean length of a corrupted span (T5)."""

    def __post_init__(self) -> None:
        require(0 < self.noise_density < 1, "objective.span.noise_density must be in (0, 1)")
        require(self.mean_span_length >= 1, "objective.span.mean_span_length must be >= 1")

    def counts(self, length: int) -> tuple[int, int]:
        """(corrupted tokens, spans) for a window of `length` tokens."""
        noise = min(max(round(length * self.noise_density), 1), length - 1)
        return noise, min(max(round(noise / self.mean_span_length), 1), noise, length - noise)

    def lengths(self, length: int) -> tuple[int, int]:
        """(encoder input, decoder target) lengths for a window of `length` tokens: the text less its
        spans plus a sentinel for each, then <|eos|>; each sentinel and its span, then <|eos|>."""
        noise, spans = self.counts(length)
        return length - noise + spans + 1, noise + spans + 1


@dataclass
class ObjectiveConfig:
    """One section per objective; a family's spec says which one it trains with."""

    causal: CausalConfig = field(default_factory=CausalConfig)
    """Next-token prediction (decoder, hybrid)."""
    masked: MaskedConfig = field(default_factory=MaskedConfig)
    """Masked LM (encoder)."""
    span: SpanConfig = field(default_factory=SpanConfig)
    """Span corruption (encoder-decoder)."""
