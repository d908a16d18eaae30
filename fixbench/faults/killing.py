"""Statistical killing (DeepCrime): a mutant counts as a fault only when the accuracies of
its training repeats are significantly worse than the original recipe's.

Training is stochastic, so one mutant run that happens to score lower proves nothing. As in
DeepCrime and Kim et al., both recipes are trained N times (seeds), and the mutant is kept when
a one-sided Mann-Whitney U test says its accuracies are lower (p < alpha) *and* the effect is
not negligible (Cohen's d at least `min_effect`; the Vargha-Delaney A12 is recorded beside it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy.stats import mannwhitneyu

ALPHA = 0.05
MIN_EFFECT = 0.5  # Cohen's "medium" effect


@dataclass(frozen=True)
class KillTest:
    """The outcome of comparing original and mutant accuracies."""

    killed: bool
    p_value: float
    cohens_d: float
    a12: float  # P(original > mutant) + ½ P(tie): 0.5 = no difference, 1 = always worse
    original_mean: float
    mutant_mean: float
    repeats: int
    alpha: float
    min_effect: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; an infinite Cohen's d (two constant, different samples) becomes None,
        since JSON has no infinity (A12 = 1 still says the samples separate completely)."""
        out = asdict(self)
        if not math.isfinite(out["cohens_d"]):
            out["cohens_d"] = None
        return out


def cohens_d(original: Sequence[float], mutant: Sequence[float]) -> float:
    """(mean original − mean mutant) / pooled standard deviation; ±inf when both samples are
    constant and differ, 0 when they are equal."""
    a, b = np.asarray(original, dtype=np.float64), np.asarray(mutant, dtype=np.float64)
    diff = a.mean() - b.mean()
    dof = len(a) + len(b) - 2
    pooled = math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / dof) if dof > 0 else 0.0
    if pooled == 0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return float(diff / pooled)


def vargha_delaney_a12(original: Sequence[float], mutant: Sequence[float]) -> float:
    """Probability that an original run beats a mutant run (ties count half)."""
    a, b = np.asarray(original, dtype=np.float64), np.asarray(mutant, dtype=np.float64)
    greater = (a[:, None] > b[None, :]).sum()
    ties = (a[:, None] == b[None, :]).sum()
    return float((greater + 0.5 * ties) / (len(a) * len(b)))


def min_repeats(alpha: float = ALPHA) -> int:
    """The fewest repeats per side with which the exact one-sided test can reach p < alpha:
    with n runs each, the smallest exact p-value is 1 / C(2n, n) (1/20 for n = 3, so three
    repeats can never kill a mutant at 0.05)."""
    n = 1
    while 1 / math.comb(2 * n, n) >= alpha:
        n += 1
    return n


def kill_test(
    original: Sequence[float],
    mutant: Sequence[float],
    alpha: float = ALPHA,
    min_effect: float = MIN_EFFECT,
) -> KillTest:
    """Is `mutant` (accuracies over repeats) significantly worse than `original`?"""
    if len(original) < 2 or len(mutant) < 2:
        raise ValueError(f"repeats: need at least 2 accuracies per side, got {len(original)} and {len(mutant)}")
    a, b = np.asarray(original, dtype=np.float64), np.asarray(mutant, dtype=np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("accuracies must be finite numbers")
    if np.array_equal(np.unique(a), np.unique(b)) and len(np.unique(a)) == 1:
        p = 1.0  # identical constant samples: scipy would divide by a zero variance
    else:
        # scipy's "auto" is exact for small samples without ties, else the normal approximation.
        p = float(mannwhitneyu(a, b, alternative="greater", method="auto").pvalue)
    d = cohens_d(a, b)
    return KillTest(
        killed=bool(p < alpha and d >= min_effect and b.mean() < a.mean()),
        p_value=p,
        cohens_d=d,
        a12=vargha_delaney_a12(a, b),
        original_mean=float(a.mean()),
        mutant_mean=float(b.mean()),
        repeats=len(a),
        alpha=alpha,
        min_effect=min_effect,
    )
