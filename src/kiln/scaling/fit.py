"""Fitting L(N, D) = E + A / N^alpha + B / D^beta to measured runs (scipy), with bootstrap intervals
and a held-out check.

The fit is Hoffmann et al. 2022's: in log space, log L_hat = LSE(a - alpha log N, b - beta log D, e)
with A = e^a, B = e^b, E = e^e, minimising the Huber loss (delta 1e-3) of log L_hat - log L with
L-BFGS from a grid of starting points, keeping the best. Bootstrap: refit on points resampled with
replacement; the intervals are the 2.5th and 97.5th percentiles. The check: fit without the run of
the largest compute and predict it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from kiln.errors import KilnError
from kiln.scaling.laws import LossLaw

Point = tuple[float, float, float]
"""(parameters N, tokens D, loss L) of one run."""

HUBER_DELTA = 1e-3


def _scipy() -> Any:
    try:
        from scipy import optimize
    except ImportError:
        raise KilnError('fitting a scaling law needs scipy: pip install -e ".[scaling]"') from None
    return optimize


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray) -> float:
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])
    pred = np.logaddexp.reduce(terms, axis=0)
    r = np.abs(pred - log_l)
    huber = np.where(r <= HUBER_DELTA, 0.5 * r**2, HUBER_DELTA * (r - 0.5 * HUBER_DELTA))
    return float(huber.sum())


def fit_law(points: Sequence[Point], name: str = "kiln", start: LossLaw | None = None) -> LossLaw:
    """The law through `points` (at least 5, with more than one N and more than one D), from a grid of
    starting points, or from `start` alone (the bootstrap's refits)."""
    if len(points) < 5:
        raise KilnError(f"fitting L(N, D) needs at least 5 runs; got {len(points)}")
    arr = np.array(points, dtype=np.float64)
    if len(set(arr[:, 0])) < 2 or len(set(arr[:, 1])) < 2:
        raise KilnError("fitting L(N, D) needs runs of more than one size and more than one token count")
    log_n, log_d, log_l = np.log(arr[:, 0]), np.log(arr[:, 1]), np.log(arr[:, 2])
    optimize = _scipy()
    e_max = math.log(arr[:, 2].min())  # E lies below every measured loss
    best = None
    starts = (
        [(math.log(start.A), math.log(start.B), min(math.log(start.E), e_max), start.alpha, start.beta)]
        if start is not None
        else itertools.product((0.0, 5.0, 10.0), (0.0, 5.0, 10.0), (e_max - 1.5, e_max - 0.5), (0.2, 0.5), (0.2, 0.5))
    )
    for a0, b0, e0, al0, be0 in starts:
        res = optimize.minimize(
            _objective,
            np.array([a0, b0, e0, al0, be0]),
            args=(log_n, log_d, log_l),
            method="L-BFGS-B",
            bounds=[(-10, 30), (-10, 30), (-5, e_max), (0.01, 2.0), (0.01, 2.0)],
        )
        if best is None or res.fun < best.fun:
            best = res
    assert best is not None
    a, b, e, alpha, beta = best.x
    return LossLaw(name, E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta, source="fitted")


@dataclass
class FitReport:
    law: LossLaw
    intervals: dict[str, tuple[float, float]]
    """95 % bootstrap intervals of E, A, B, alpha, beta."""
    held_out: dict[str, float] | None
    """The largest-compute run predicted by a fit without it: its N, D, measured and predicted loss."""
    residuals: list[float]

    def as_dict(self) -> dict[str, Any]:
        law = self.law
        return {
            "law": {"E": law.E, "A": law.A, "B": law.B, "alpha": law.alpha, "beta": law.beta},
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "held_out": self.held_out,
            "residuals": self.residuals,
        }


def fit_with_checks(points: Sequence[Point], bootstrap: int = 200, seed: int = 0) -> FitReport:
    """The fit, its bootstrap intervals and its prediction of the largest run from the others."""
    law = fit_law(points)
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {k: [] for k in ("E", "A", "B", "alpha", "beta")}
    for _ in range(bootstrap):
        pick = [points[i] for i in rng.integers(0, len(points), len(points))]
        try:
            b = fit_law(pick, start=law)
        except KilnError:  # a resample with one size or one token count: no fit, skip it
            continue
        for k in samples:
            samples[k].append(getattr(b, k))
    intervals = {k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) for k, v in samples.items() if v}
    largest = max(range(len(points)), key=lambda i: points[i][0] * points[i][1])
    rest = [p for i, p in enumerate(points) if i != largest]
    held_out = None
    try:
        without = fit_law(rest)
        n, d, loss = points[largest]
        predicted = without.loss(n, d)
        held_out = {
            "params": n,
            "tokens": d,
            "loss": loss,
            "predicted": predicted,
            "error": predicted - loss,
            "relative_error": (predicted - loss) / loss,
        }
    except KilnError:
        pass
    residuals = [law.loss(n, d) - loss for n, d, loss in points]
    return FitReport(law, intervals, held_out, residuals)
