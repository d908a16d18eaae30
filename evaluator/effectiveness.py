"""Effectiveness of one repair on held-out data (You et al.): accuracy, RR, NFR, ⇑ACC,
per-class accuracy. The study-level verdicts for training-recipe faults (Kim et al.) live in
fixbench.analysis.recipe_repair."""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from fixbench.analysis.errors import (
    EmptyInputError,
    LengthMismatchError,
    check_same_length,
)


def effectiveness_metrics(y: np.ndarray, pred_before: np.ndarray, pred_after: np.ndarray) -> dict[str, float]:
    """acc_before / acc_after (%), RR, NFR and dACC (⇑ACC, relative %) on one split.

    RR  = |wrong before and right after| / |wrong before| × 100 (0 when nothing was wrong).
    NFR = |right before and wrong after| / |all inputs| × 100.
    dACC = (acc_after − acc_before) / acc_before × 100 (0 when acc_before is 0).
    """
    y, pred_before, pred_after = (np.asarray(a) for a in (y, pred_before, pred_after))
    if not (len(y) == len(pred_before) == len(pred_after)):
        raise LengthMismatchError(
            f"labels and predictions differ in length: {len(y)} labels, "
            f"{len(pred_before)} original and {len(pred_after)} repaired predictions"
        )
    n = len(y)
    if n == 0:
        raise EmptyInputError("cannot score an empty split")
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


def per_class_accuracy(y: np.ndarray, pred: np.ndarray, classes: Iterable[int] | None = None) -> dict[int, float]:
    """Accuracy (%) among the inputs of each true class: |pred == y == c| / |y == c| × 100.

    `classes` defaults to the labels present in `y`; a listed class with no input gets NaN
    (there is nothing to be right or wrong about), never 0.
    """
    y, pred = np.asarray(y), np.asarray(pred)
    check_same_length(y=y, pred=pred)
    if len(y) == 0:
        raise EmptyInputError("cannot compute per-class accuracy on an empty split")
    wanted = sorted(set(np.unique(y).tolist())) if classes is None else [int(c) for c in classes]
    out: dict[int, float] = {}
    for c in wanted:
        mask = y == c
        out[int(c)] = float((pred[mask] == c).mean() * 100.0) if mask.any() else math.nan
    return out


def per_class_effectiveness(
    y: np.ndarray,
    pred_before: np.ndarray,
    pred_after: np.ndarray,
    classes: Iterable[int] | None = None,
) -> dict[int, dict[str, float]]:
    """Per true class: support, acc_before, acc_after (%) and their difference (points)."""
    y, pred_before, pred_after = (np.asarray(a) for a in (y, pred_before, pred_after))
    check_same_length(y=y, pred_before=pred_before, pred_after=pred_after)
    before = per_class_accuracy(y, pred_before, classes)
    after = per_class_accuracy(y, pred_after, before.keys())
    return {
        c: {
            "support": float((y == c).sum()),
            "acc_before": before[c],
            "acc_after": after[c],
            "delta": after[c] - before[c],
        }
        for c in before
    }
