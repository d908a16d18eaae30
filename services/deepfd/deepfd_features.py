"""DeepFD's features of a training run and its fault labels (Cao et al., "DeepFD: Automated
Fault Diagnosis and Localization for Deep Learning Programs", ICSE 2022).

DeepFD's monitor records, after every epoch, the loss/accuracy values and a set of symptom
counters (AutoTrainer's, plus its own: increasing loss, decreasing accuracy, constant weight
mean / std, NaN accuracy); a run's feature vector is each of those series summarised by eight
statistics (mean, std, skew, median, var, sem, max, min). Thresholds are the authors'
(github.com/ArabelaTso/DeepFD, CodeBook/Callbacks/Monitor.py, CodeBook/Config.py); our code.
Imports only numpy and scipy so that the feature table builder (benchmarks/) and the service
share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

# DeepFD's five fault types and the recipe fields each one names, most specific first.
LABELS = ("opt", "lr", "act", "loss", "epoch")
LABEL_FIELDS = {
    "opt": ("optimizer",),
    "lr": ("learning_rate",),
    "act": ("activation", "last_activation"),
    "loss": ("loss",),
    "epoch": ("epochs",),
}
OPERATORS = ("mean", "std", "skew", "median", "var", "sem", "max", "min")
THRESHOLDS = {"beta_1": 1e-3, "beta_2": 1e-4, "beta_3": 70.0, "gamma": 0.7, "zeta": 0.03, "eta": 0.2,
              "delta": 0.01, "theta": 0.6}
SERIES = ("loss", "acc", "val_loss", "val_acc", "nan_loss", "nan_acc", "test_not_well", "test_turn_bad",
          "unstable_loss", "not_converge", "sc_accuracy", "died_relu", "vanish_gradient", "explode_gradient",
          "nan_gradient", "large_weight", "nan_weight", "decrease_acc", "increase_loss", "cons_mean_weight",
          "cons_std_weight")
FEATURE_NAMES = tuple(f"{s}_{op}" for s in SERIES for op in OPERATORS)
_BIG = 1e6  # NaN / Inf values of a series are replaced by this (they are what the classifier must see)


def _finite(values) -> bool:
    return all(v is not None and math.isfinite(v) for v in values)


def _max_rise(values) -> float:
    return max([b - a for a, b in zip(values, values[1:], strict=False)] + [0.0])


def _oscillates(acc, zeta, eta) -> bool:
    maxima, minima = [], []
    for i in range(1, len(acc) - 1):
        if acc[i] >= acc[i - 1] and acc[i] >= acc[i + 1]:
            maxima.append(acc[i])
        if acc[i] <= acc[i - 1] and acc[i] <= acc[i + 1]:
            minima.append(acc[i])
    return sum(1 for hi, lo in zip(maxima, minima, strict=False) if hi - lo >= zeta) >= eta * len(acc)


@dataclass
class FeatureMonitor:
    """The trainer's on_epoch hook: one row of DeepFD's monitor features per epoch."""

    total_epochs: int
    rows: list[dict[str, float]] = field(default_factory=list)
    history: dict[str, list[float]] = field(default_factory=lambda: {"loss": [], "acc": [], "val_loss": [], "val_acc": []})
    state: dict[str, float] = field(default_factory=lambda: {s: 0.0 for s in SERIES})
    last_weights: list[np.ndarray] = field(default_factory=list)

    def __call__(self, epoch_state) -> bool:
        t, f, h, rec = THRESHOLDS, self.state, self.history, epoch_state.record
        for key, name in (("loss", "loss"), ("acc", "accuracy"), ("val_loss", "valid_loss"), ("val_acc", "valid_accuracy")):
            h[key].append(float(rec.get(name, math.nan)))
        f["loss"], f["acc"], f["val_loss"], f["val_acc"] = (h[k][-1] for k in ("loss", "acc", "val_loss", "val_acc"))
        grads = [np.asarray(g, dtype=np.float64) for _, g in epoch_state.gradients]
        if grads:
            if not all(np.isfinite(g).all() for g in grads):
                f["nan_gradient"] = 1.0
            else:
                kernels = [g for g in grads if g.ndim >= 2] or grads
                norms = [float(np.linalg.norm(g)) for g in kernels]
                ratio = norms[0] / norms[-1] if norms[-1] > 0 else (math.inf if norms[0] > 0 else 0.0)
                zero = sum(int((g == 0).sum()) for g in grads) / max(sum(g.size for g in grads), 1)
                f["vanish_gradient"] += float(ratio < t["beta_1"] and norms[0] < t["beta_2"])
                f["explode_gradient"] += float(ratio > t["beta_3"])
                f["died_relu"] += float(zero >= t["gamma"])
        weights = [p.detach().numpy().astype(np.float64) for p in epoch_state.model.parameters()]
        if not all(np.isfinite(w).all() for w in weights):
            f["nan_weight"] = 1.0
        else:
            f["large_weight"] += float(any(np.abs(w).max() > 5 for w in weights if w.size))
            for cur, last in zip(weights, self.last_weights, strict=False):
                f["cons_mean_weight"] += float(np.mean(cur) == np.mean(last))
                f["cons_std_weight"] += float(np.std(cur) == np.std(last))
        self.last_weights = weights
        if not _finite(h["loss"]) or not _finite(h["val_loss"]) or h["val_loss"][-1] >= 1e5:
            f["nan_loss"] += 1.0
        elif not _finite(h["acc"]) or not _finite(h["val_acc"]):
            f["nan_acc"] += 1.0
        elif len(h["loss"]) >= 0.3 * self.total_epochs:
            tr, va = h["acc"][-1], h["val_acc"][-1]
            if (tr <= 0.9 and tr - va >= 0.1) or (tr > 0.9 and tr - va >= 0.07):
                f["test_not_well"] += 1.0
            bad = 0
            for i in range(len(h["loss"]) - 1):
                if h["loss"][-i - 1] - h["loss"][-i - 2] < -1e-2 and h["val_loss"][-i - 1] - h["val_loss"][-i - 2] > 1e-2:
                    bad += 1
                else:
                    break
            f["test_turn_bad"] = float(bad)
            f["unstable_loss"] = float(f["unstable_loss"] or _oscillates(h["acc"], t["zeta"], t["eta"]))
            f["not_converge"] = float(max(h["val_acc"]) < t["theta"] or max(h["acc"]) < t["theta"])
            f["sc_accuracy"] = float(_max_rise(h["val_acc"]) < t["delta"] and _max_rise(h["acc"]) < t["delta"])
            if len(h["loss"]) > 1:
                f["increase_loss"] += float(h["loss"][-1] > h["loss"][-2])
                f["decrease_acc"] += float(h["acc"][-1] < h["acc"][-2])
        self.rows.append(dict(f))
        return False


def feature_vector(rows: list[dict[str, float]]) -> np.ndarray:
    """The eight statistics of every series over the epochs (DeepFD's extract_feature)."""
    if not rows:
        raise ValueError("no epoch was recorded, so the run has no features")
    out = []
    for s in SERIES:
        x = np.array([r.get(s, 0.0) for r in rows], dtype=np.float64)
        x = np.where(np.isfinite(x), x, _BIG)
        with np.errstate(all="ignore"):
            values = {
                "mean": np.mean(x), "std": np.std(x, ddof=1) if len(x) > 1 else 0.0,
                "skew": stats.skew(x) if len(x) > 2 and np.ptp(x) > 0 else 0.0, "median": np.median(x),
                "var": np.var(x, ddof=1) if len(x) > 1 else 0.0,
                "sem": stats.sem(x) if len(x) > 1 and np.ptp(x) > 0 else 0.0, "max": np.max(x), "min": np.min(x),
            }
        out += [float(values[op]) if np.isfinite(values[op]) else 0.0 for op in OPERATORS]
    return np.array(out, dtype=np.float64)
