"""Parametric scaling laws L(N, D) = E + A / N^alpha + B / D^beta and their compute-optimal allocation.

N is parameters, D training tokens, and a run costs C = 6 N D FLOPs (Kaplan et al. 2020's
approximation, which the published fits assume). Minimising L under that constraint gives

    N_opt(C) = G (C / 6)^(beta / (alpha + beta)),   D_opt(C) = (C / 6) / N_opt(C),
    G = (alpha A / (beta B))^(1 / (alpha + beta)).

Two published fits are built in: Hoffmann et al. 2022's approach 3 as printed in the Chinchilla
paper, and Besiroglu et al. 2024's replication from the paper's own data. At Gopher's budget
(5.76e23 FLOPs) the replication gives ~72B parameters and ~1.3T tokens (about 18 tokens per
parameter, close to the 70B / 1.4T Chinchilla actually trained), while approach 3 as printed gives
~32B and ~3.0T: the replication traced the gap to the original fit (its rounding and loss
function, its early-stopped optimiser), not to the data.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LossLaw:
    name: str
    E: float
    A: float
    B: float
    alpha: float
    beta: float
    source: str = ""

    def loss(self, params: float, tokens: float) -> float:
        return self.E + self.A / params**self.alpha + self.B / tokens**self.beta

    def optimal(self, flops: float) -> tuple[float, float]:
        """(parameters, tokens) that minimise the loss at `flops` = 6 N D."""
        a, b = self.alpha, self.beta
        g = (a * self.A / (b * self.B)) ** (1 / (a + b))
        params = g * (flops / 6) ** (b / (a + b))
        return params, flops / 6 / params

    def tokens_per_param(self, flops: float) -> float:
        params, tokens = self.optimal(flops)
        return tokens / params


HOFFMANN = LossLaw(
    "hoffmann2022",
    E=1.69,
    A=406.4,
    B=410.7,
    alpha=0.34,
    beta=0.28,
    source="Hoffmann et al. 2022 (Chinchilla), approach 3 as published",
)
BESIROGLU = LossLaw(
    "besiroglu2024",
    E=1.82,
    A=482.0,
    B=2085.4,
    alpha=0.3478,
    beta=0.3658,
    source="Besiroglu et al. 2024, the replication of approach 3 from Chinchilla's data",
)
PUBLISHED = (BESIROGLU, HOFFMANN)

GOPHER_FLOPS = 5.76e23
"""Gopher's (and Chinchilla's) training budget, the allocation the papers compare at."""


def discrepancy_note(flops: float) -> str:
    """A line on why the two published fits disagree, with their allocations at `flops`."""
    (nb, db), (nh, dh) = BESIROGLU.optimal(flops), HOFFMANN.optimal(flops)
    return (
        f"The two published fits disagree: at {flops:.3g} FLOPs the replication gives {nb:.3g} parameters x "
        f"{db:.3g} tokens ({db / nb:.0f} tokens/parameter), approach 3 as published {nh:.3g} x {dh:.3g} "
        f"({dh / nh:.0f}/parameter). Besiroglu et al. 2024 refit Chinchilla's own data and found the printed "
        "approach-3 parameters inconsistent with the paper's other two approaches (and with the 70B/1.4T it "
        "trained); prefer the replication."
    )


def epochs_note(tokens: float, corpus_tokens: int) -> tuple[float, str]:
    """(epochs over the corpus, a warning or ""), after Muennighoff et al. 2023: up to ~4 epochs of
    repeated data are worth almost as much as fresh tokens; past ~16 further repeats add little."""
    epochs = tokens / max(corpus_tokens, 1)
    if epochs > 16:
        return epochs, (
            f"{epochs:.0f} epochs of the corpus: past ~16, repeated tokens are worth almost nothing "
            "(Muennighoff et al. 2023); add data or train a smaller model for fewer tokens"
        )
    if epochs > 4:
        return epochs, (
            f"{epochs:.1f} epochs of the corpus: past ~4 each repeat is worth less than fresh data "
            "(Muennighoff et al. 2023); the loss predicted for unique tokens is optimistic"
        )
    return epochs, ""
