"""Backward compatibility of an updated model with the one users already trust
(Srivastava, Nushi, Kamar, Shah & Horvitz, "An Empirical Analysis of Backward Compatibility
in Machine Learning Systems", KDD 2020), plus the negative flip rate (You et al.)."""

from __future__ import annotations

import numpy as np

from fixbench.analysis.errors import EmptyInputError, check_same_length


def backward_compatibility(y: np.ndarray, pred_before: np.ndarray, pred_after: np.ndarray) -> dict[str, float]:
    """NFR, BTC and BEC (all in %), with the counts behind them.

    NFR = |right before ∧ wrong after| / |all inputs| × 100 (negative flips).
    BTC (backward trust compatibility) = |right before ∧ right after| / |right before| × 100:
        how much of what users could trust stays right.
    BEC (backward error compatibility) = |wrong before ∧ wrong after| / |wrong after| × 100:
        how many of the new model's errors are old, familiar ones.

    Vacuous cases count as fully compatible (100): with nothing right before there is no
    trust to break, and with nothing wrong after there is no new error. The counts are
    returned so that a reader can tell a vacuous 100 from a measured one.
    """
    y, pred_before, pred_after = (np.asarray(a) for a in (y, pred_before, pred_after))
    n = check_same_length(y=y, pred_before=pred_before, pred_after=pred_after)
    if n == 0:
        raise EmptyInputError("cannot measure backward compatibility on an empty split")
    right_before, right_after = pred_before == y, pred_after == y
    n_right_before = int(right_before.sum())
    n_wrong_after = int((~right_after).sum())
    kept = int((right_before & right_after).sum())
    old_errors = int((~right_before & ~right_after).sum())
    flips = int((right_before & ~right_after).sum())
    return {
        "nfr": flips / n * 100.0,
        "btc": kept / n_right_before * 100.0 if n_right_before else 100.0,
        "bec": old_errors / n_wrong_after * 100.0 if n_wrong_after else 100.0,
        "right_before": float(n_right_before),
        "wrong_after": float(n_wrong_after),
        "negative_flips": float(flips),
    }
