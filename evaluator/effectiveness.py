"""Effectiveness of a repair on held-out data (You et al.): accuracy, RR, NFR, ⇑ACC."""

from __future__ import annotations

import numpy as np


def effectiveness_metrics(y: np.ndarray, pred_before: np.ndarray, pred_after: np.ndarray) -> dict[str, float]:
    """acc_before / acc_after (%), RR, NFR and dACC (⇑ACC, relative %) on one split.

    RR  = |wrong before and right after| / |wrong before| × 100 (0 when nothing was wrong).
    NFR = |right before and wrong after| / |all inputs| × 100.
    dACC = (acc_after − acc_before) / acc_before × 100 (0 when acc_before is 0).
    """
    y, pred_before, pred_after = (np.asarray(a) for a in (y, pred_before, pred_after))
    if not (len(y) == len(pred_before) == len(pred_after)):
        raise ValueError(
            f"labels and predictions differ in length: {len(y)} labels, "
            f"{len(pred_before)} original and {len(pred_after)} repaired predictions"
        )
    n = len(y)
    if n == 0:
        raise ValueError("cannot score an empty split")
    right_before = pred_before == y
    right_after = pred_after == y
    wrong_before = int((~right_before).sum())
    acc_before = right_before.mean() * 100.0
    acc_after = right_after.mean() * 100.0
    fixed = int((~right_before & right_after).sum())
    broken = int((right_before & ~right_after).sum())
    return {
        "acc_before": float(acc_before),
        "acc_after": float(acc_after),
        "rr": float(fixed / wrong_before * 100.0) if wrong_before else 0.0,
        "nfr": float(broken / n * 100.0),
        "dacc": float((acc_after - acc_before) / acc_before * 100.0) if acc_before else 0.0,
        "n": float(n),
        "wrong_before": float(wrong_before),
        "fixed": float(fixed),
        "broken": float(broken),
    }
