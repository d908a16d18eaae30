"""Statistics across seeds: summaries of a tidy results frame, pairwise tests, effect size,
and compact-letter display (CLD) groups like those of You et al.'s tables."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from fixbench.analysis.errors import (
    EmptyInputError,
    EvaluationError,
    InvalidSettingError,
    LengthMismatchError,
)

_ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class TestResult:
    """A test's statistic and p-value."""

    test: str
    statistic: float
    p_value: float


def _sample(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float).ravel()
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        raise EmptyInputError(f"{name} holds no (non-NaN) values")
    return arr


def _check_alternative(alternative: str) -> None:
    if alternative not in _ALTERNATIVES:
        raise InvalidSettingError(f"alternative must be one of {_ALTERNATIVES}, got {alternative!r}")


def summarize(
    df: pd.DataFrame,
    metrics: Sequence[str] | None = None,
    by: Sequence[str] = ("approach", "subject"),
) -> pd.DataFrame:
    """Mean, standard deviation (ddof=1; NaN for one run) and run count of each metric per
    `by` group, from a tidy frame with one row per job. Columns are a (metric, stat)
    MultiIndex; NaN metric values (e.g. a property that was unsupported) are left out of
    that metric's statistics only."""
    missing = [c for c in by if c not in df.columns]
    if missing:
        raise EvaluationError(f"results frame lacks column(s) {missing}; it has {list(df.columns)}")
    if metrics is None:
        metrics = [c for c in df.columns if c not in by and c != "seed" and pd.api.types.is_numeric_dtype(df[c])]
    unknown = [m for m in metrics if m not in df.columns]
    if unknown:
        raise EvaluationError(f"results frame lacks metric column(s) {unknown}")
    grouped = df.groupby(list(by), sort=True)[list(metrics)]
    out = pd.concat(
        {"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()},
        axis=1,
    )
    return out.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)


def wilcoxon_signed_rank(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> TestResult:
    """Wilcoxon signed-rank test on paired samples (a_i, b_i); all-zero differences give p = 1."""
    _check_alternative(alternative)
    a_arr, b_arr = (
        np.asarray(a, dtype=float).ravel(),
        np.asarray(b, dtype=float).ravel(),
    )
    if a_arr.size != b_arr.size:
        raise LengthMismatchError(f"paired samples differ in length: a={a_arr.size}, b={b_arr.size}")
    if a_arr.size == 0:
        raise EmptyInputError("Wilcoxon test on empty samples")
    if np.all(a_arr == b_arr):
        return TestResult("wilcoxon", 0.0, 1.0)
    res = stats.wilcoxon(a_arr, b_arr, alternative=alternative)
    return TestResult("wilcoxon", float(res.statistic), float(res.pvalue))


def mann_whitney_u(a: Sequence[float], b: Sequence[float], alternative: str = "two-sided") -> TestResult:
    """Mann-Whitney U test on independent samples (statistic is U of `a`)."""
    _check_alternative(alternative)
    res = stats.mannwhitneyu(_sample(a, "a"), _sample(b, "b"), alternative=alternative)
    return TestResult("mann-whitney-u", float(res.statistic), float(res.pvalue))


def vargha_delaney_a12(a: Sequence[float], b: Sequence[float]) -> float:
    """A12 = P(A > B) + ½ P(A = B) over all pairs: 0.5 no effect, 1 A always larger."""
    x, y = _sample(a, "a"), _sample(b, "b")
    greater = (x[:, None] > y[None, :]).sum()
    ties = (x[:, None] == y[None, :]).sum()
    return float((greater + 0.5 * ties) / (x.size * y.size))


def a12_magnitude(a12: float) -> str:
    """Vargha & Delaney's labels by |A12 − 0.5|: < 0.06 negligible, < 0.14 small,
    < 0.21 medium, else large (thresholds 0.56 / 0.64 / 0.71 on the upper side)."""
    d = abs(a12 - 0.5)
    return "negligible" if d < 0.06 else "small" if d < 0.14 else "medium" if d < 0.21 else "large"


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (monotone, capped at 1), in the input order."""
    p = np.asarray(p_values, dtype=float)
    m = p.size
    order = np.argsort(p)
    adjusted = np.empty(m)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, (m - rank) * p[idx])
        adjusted[idx] = min(1.0, running)
    return adjusted


def pairwise_p_values(samples: Mapping[str, Sequence[float]], test: str = "tukey") -> dict[tuple[str, str], float]:
    """p-value of "these two treatments differ" for every pair of `samples`.

    test: "tukey" (Tukey HSD, already family-wise; the usual basis of CLD), "welch"
    (Welch t-test) or "mann-whitney" (exact for small samples; note that with 3 runs
    per treatment its smallest two-sided p is 0.1, so it never separates at α = 0.05).
    When every sample has ≥ 2 runs and zero variance the tests are undefined; then two
    treatments differ (p = 0) exactly when their values differ.
    """
    names = list(samples)
    if len(names) < 2:
        return {}
    data = {k: _sample(v, f"samples[{k!r}]") for k, v in samples.items()}
    pairs = list(itertools.combinations(names, 2))
    if all(v.size >= 2 and np.ptp(v) == 0 for v in data.values()):
        return {(a, b): 0.0 if data[a][0] != data[b][0] else 1.0 for a, b in pairs}
    if test == "tukey":
        if sum(v.size for v in data.values()) - len(data) < 1:
            raise InvalidSettingError("Tukey HSD needs replicated runs (some treatment with ≥ 2 values)")
        # scipy's Tukey HSD needs ≥ 2 runs in every treatment. A treatment left with one
        # (its other runs CORRUPTED or TIMEOUT, say) has no spread to test against, so it is
        # never shown to differ (p = 1); the replicated ones are compared among themselves.
        replicated = [k for k in names if data[k].size >= 2]
        out = dict.fromkeys(pairs, 1.0)
        if len(replicated) < 2:
            return out
        if all(np.ptp(data[k]) == 0 for k in replicated):
            out.update({(a, b): 0.0 if data[a][0] != data[b][0] else 1.0 for a, b in pairs
                        if a in replicated and b in replicated})
            return out
        res = stats.tukey_hsd(*[data[k] for k in replicated])
        out.update({(a, b): float(res.pvalue[replicated.index(a), replicated.index(b)]) for a, b in pairs
                    if a in replicated and b in replicated})
        return out
    if test == "welch":
        out = {}
        for a, b in pairs:
            if data[a].size < 2 or data[b].size < 2:
                raise InvalidSettingError(f"Welch t-test needs ≥ 2 runs per treatment ({a!r} or {b!r} has 1)")
            p = stats.ttest_ind(data[a], data[b], equal_var=False).pvalue
            # Both samples constant: no spread, so any difference of means is certain.
            out[(a, b)] = float(p) if not math.isnan(p) else (0.0 if data[a].mean() != data[b].mean() else 1.0)
        return out
    if test == "mann-whitney":
        return {(a, b): mann_whitney_u(data[a], data[b]).p_value for a, b in pairs}
    raise InvalidSettingError(f"test must be 'tukey', 'welch' or 'mann-whitney', got {test!r}")


def compact_letter_display(
    samples: Mapping[str, Sequence[float]],
    alpha: float = 0.05,
    test: str = "tukey",
    adjust: str | None = None,
    higher_is_better: bool = True,
) -> dict[str, str]:
    """Letters per treatment such that two treatments share a letter iff their difference is
    not significant (Piepho's insert-and-absorb algorithm, 2004). "a" marks the group of the
    best mean (highest, or lowest when `higher_is_better=False`).

    `adjust="holm"` applies Holm's correction to the pairwise p-values (default: none for
    Tukey, which is already family-wise; pass "holm" with Welch or Mann-Whitney).
    """
    if not 0.0 < alpha < 1.0:
        raise InvalidSettingError(f"alpha must lie in (0, 1), got {alpha}")
    if adjust not in (None, "holm"):
        raise InvalidSettingError(f"adjust must be None or 'holm', got {adjust!r}")
    names = list(samples)
    if not names:
        raise EmptyInputError("compact letter display of no treatments")
    means = {k: float(_sample(v, f"samples[{k!r}]").mean()) for k, v in samples.items()}
    pvals = pairwise_p_values(samples, test)
    if adjust == "holm" and pvals:
        keys = list(pvals)
        pvals = dict(zip(keys, holm_adjust([pvals[k] for k in keys]), strict=True))
    columns: list[set[str]] = [set(names)]
    for (a, b), p in pvals.items():
        if p >= alpha:
            continue
        # Insert: every letter group holding both a and b splits into one without each.
        new_columns: list[set[str]] = []
        for col in columns:
            if a in col and b in col:
                new_columns.extend([col - {a}, col - {b}])
            else:
                new_columns.append(col)
        # Absorb: drop groups contained in another group; they add no information.
        unique = [set(c) for c in {frozenset(c) for c in new_columns}]
        columns = [c for c in unique if not any(c < other for other in unique)]
    sign = -1.0 if higher_is_better else 1.0
    columns.sort(key=lambda col: (min(sign * means[k] for k in col), sorted(col)))
    letters = {k: "" for k in names}
    for i, col in enumerate(columns):
        letter = _letter(i)
        for k in sorted(col, key=names.index):
            letters[k] += letter
    return letters


def _letter(i: int) -> str:
    # a..z then aa, ab…: more than 26 groups happen with many approaches × large samples.
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    return alphabet[i] if i < 26 else _letter(i // 26 - 1) + alphabet[i % 26]
