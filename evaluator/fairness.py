"""Group fairness of a classifier's predictions with respect to a sensitive attribute.

Every multi-class rate is taken one-vs-rest: for class c, a "positive" is an input whose
label is c, a "predicted positive" one predicted as c.

Multi-group choice: AAOD, the demographic-parity difference and the equalised-odds
difference are defined for two groups; with more we report the **maximum over group pairs**
(the worst-treated pair), not the mean. The maximum reduces exactly to the two-group value,
cannot be diluted by adding groups that happen to be treated alike (a mean over pairs
shrinks as near-identical groups are added), and matches fairlearn's max − min convention
for the parity and odds differences. `aaod_pairs` in the details holds every pair's value
for readers who want another summary.

Undefined rates: a group with no input of class c has no TPR for c (and a group whose
inputs are all class c has no FPR for c). Such a class is skipped *for that pair only* in
the corresponding mean; a pair with no defined class for a term is skipped; if no pair is
defined the metric is NaN. With a single class (labels and predictions all equal to c)
every FPR is undefined and AAOD reduces to ½ · |ΔTPR_c| — we keep the ½ so that values stay
comparable across subjects.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable

import numpy as np

from fixbench.analysis.errors import (
    EmptyInputError,
    FairnessUndefinedError,
    MissingSensitiveAttributeError,
    check_same_length,
)


def _prepare(y, pred, group, classes):
    if group is None:
        raise MissingSensitiveAttributeError("fairness needs a sensitive attribute, but the split has no 'group' array")
    y, pred, group = np.asarray(y), np.asarray(pred), np.asarray(group)
    n = check_same_length(y=y, pred=pred, group=group)
    if n == 0:
        raise EmptyInputError("cannot measure fairness on an empty split")
    groups = np.unique(group)
    if len(groups) < 2:
        raise FairnessUndefinedError(
            f"the sensitive attribute takes a single value ({groups.tolist()}) in this split; "
            "fairness compares at least two groups"
        )
    cls = (
        sorted(set(np.unique(y).tolist()) | set(np.unique(pred).tolist()))
        if classes is None
        else [int(c) for c in classes]
    )
    return y, pred, group, groups.tolist(), cls


def group_rates(
    y: np.ndarray,
    pred: np.ndarray,
    group: np.ndarray,
    classes: Iterable[int] | None = None,
) -> dict[int, dict]:
    """Per group: size, accuracy, and per class one-vs-rest TPR, FPR and selection rate
    (fractions in [0, 1]; NaN where undefined)."""
    y, pred, group, groups, cls = _prepare(y, pred, group, classes)
    out: dict[int, dict] = {}
    for g in groups:
        m = group == g
        yg, pg = y[m], pred[m]
        tpr, fpr, sel = {}, {}, {}
        for c in cls:
            pos, neg = yg == c, yg != c
            tpr[c] = float((pg[pos] == c).mean()) if pos.any() else math.nan
            fpr[c] = float((pg[neg] == c).mean()) if neg.any() else math.nan
            sel[c] = float((pg == c).mean())
        out[int(g)] = {
            "n": int(m.sum()),
            "accuracy": float((yg == pg).mean()),
            "tpr": tpr,
            "fpr": fpr,
            "selection_rate": sel,
        }
    return out


def _mean_abs_diff(a: dict, b: dict, classes) -> float:
    diffs = [abs(a[c] - b[c]) for c in classes if not (math.isnan(a[c]) or math.isnan(b[c]))]
    return float(np.mean(diffs)) if diffs else math.nan


def _max_spread(rates: dict[int, dict], key: str, classes) -> float:
    """max over classes of (max − min over groups) of rates[g][key][c], ignoring NaN."""
    spreads = []
    for c in classes:
        vals = [r[key][c] for r in rates.values() if not math.isnan(r[key][c])]
        if len(vals) >= 2:
            spreads.append(max(vals) - min(vals))
    return float(max(spreads)) if spreads else math.nan


def fairness_metrics(
    y: np.ndarray,
    pred: np.ndarray,
    group: np.ndarray,
    classes: Iterable[int] | None = None,
) -> tuple[dict[str, float], dict]:
    """(metrics, details) for one model's predictions.

    metrics: "aaod" = max over group pairs of ½ (mean_c |ΔTPR_c| + mean_c |ΔFPR_c|);
    "dpd" (demographic-parity difference) = max over classes of the spread (max − min over
    groups) of the selection rate P(pred = c | group); "eod" (equalised-odds difference) =
    max over classes of max(TPR spread, FPR spread); "accuracy_gap" = spread of per-group
    accuracy. All are fractions in [0, 1]; 0 is perfectly fair. For two classes dpd and eod
    equal fairlearn's binary demographic_parity_difference / equalized_odds_difference and
    aaod equals the usual binary average absolute odds difference.
    details: per-group rates (`group_rates`) and every pair's AAOD.
    """
    y, pred, group, groups, cls = _prepare(y, pred, group, classes)
    rates = group_rates(y, pred, group, cls)
    pair_values: dict[str, float] = {}
    for g1, g2 in itertools.combinations(groups, 2):
        a, b = rates[int(g1)], rates[int(g2)]
        tpr_term = _mean_abs_diff(a["tpr"], b["tpr"], cls)
        fpr_term = _mean_abs_diff(a["fpr"], b["fpr"], cls)
        terms = [t for t in (tpr_term, fpr_term) if not math.isnan(t)]
        # A term with no defined class contributes 0 rather than voiding the pair: it has
        # no measured disparity, and the ½ keeps the scale of the two-term definition.
        pair_values[f"{g1}-{g2}"] = 0.5 * sum(terms) if terms else math.nan
    defined = [v for v in pair_values.values() if not math.isnan(v)]
    accs = [r["accuracy"] for r in rates.values()]
    tpr_spread, fpr_spread = (
        _max_spread(rates, "tpr", cls),
        _max_spread(rates, "fpr", cls),
    )
    odds = [v for v in (tpr_spread, fpr_spread) if not math.isnan(v)]
    metrics = {
        "aaod": float(max(defined)) if defined else math.nan,
        "dpd": _max_spread(rates, "selection_rate", cls),
        "eod": float(max(odds)) if odds else math.nan,
        "accuracy_gap": float(max(accs) - min(accs)),
        "groups": float(len(groups)),
    }
    return metrics, {"groups": rates, "aaod_pairs": pair_values}


def fairness_change(
    y: np.ndarray,
    pred_before: np.ndarray,
    pred_after: np.ndarray,
    group: np.ndarray,
    classes: Iterable[int] | None = None,
) -> tuple[dict[str, float], dict]:
    """Fairness of both models and the change, as flat metrics "aaod_before", "aaod_after",
    "daaod" (after − before; negative = fairer), likewise for dpd and eod."""
    y, pred_before, pred_after = (np.asarray(a) for a in (y, pred_before, pred_after))
    check_same_length(y=y, pred_before=pred_before, pred_after=pred_after)
    if classes is None:
        # One class list for both models, so that both are averaged over the same classes.
        classes = sorted(
            set(np.unique(y).tolist()) | set(np.unique(pred_before).tolist()) | set(np.unique(pred_after).tolist())
        )
    before, details_before = fairness_metrics(y, pred_before, group, classes)
    after, details_after = fairness_metrics(y, pred_after, group, classes)
    metrics: dict[str, float] = {}
    for key in ("aaod", "dpd", "eod", "accuracy_gap"):
        metrics[f"{key}_before"] = before[key]
        metrics[f"{key}_after"] = after[key]
        metrics[f"d{key}"] = after[key] - before[key]
    return metrics, {"before": details_before, "after": details_after}
