"""The LP layer-level repairs reduce to (RA's PRDNN, 3M-DNN's single-layer steps): the smallest change Δ
(L∞ or L1 norm) with lower <= A Δ <= upper, solved with HiGHS (highspy, imported with this module).

Rows are given sparse (CSR: indptr, indices, values) since each margin row touches only the
two class columns of the changed layer."""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np

NORMS = ("linf", "l1")


@dataclass
class LPResult:
    status: str               # HiGHS's model status, e.g. "Optimal", "Infeasible", "Time limit reached"
    delta: np.ndarray | None  # the change, when optimal
    objective: float = float("nan")
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.delta is not None


class Rows:
    """Sparse constraint rows lower <= a . Δ <= upper, built row by row."""

    def __init__(self, n: int):
        self.n = n
        self.indptr = [0]
        self.indices: list[np.ndarray] = []
        self.values: list[np.ndarray] = []
        self.lower: list[float] = []
        self.upper: list[float] = []

    def add(self, idx: np.ndarray, val: np.ndarray, lower: float, upper: float) -> None:
        keep = val != 0
        idx, val = np.asarray(idx, dtype=np.int64)[keep], np.asarray(val, dtype=np.float64)[keep]
        self.indices.append(idx)
        self.values.append(val)
        self.indptr.append(self.indptr[-1] + len(idx))
        self.lower.append(lower)
        self.upper.append(upper)

    def __len__(self) -> int:
        return len(self.lower)


_DEFINITE = {
    highspy.HighsModelStatus.kOptimal, highspy.HighsModelStatus.kInfeasible, highspy.HighsModelStatus.kUnbounded,
    highspy.HighsModelStatus.kUnboundedOrInfeasible, highspy.HighsModelStatus.kTimeLimit,
    highspy.HighsModelStatus.kIterationLimit,
}


def _run(lp, time_limit: float, seed: int, presolve: bool):
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("threads", 1)
    h.setOptionValue("random_seed", int(seed) % (2**31 - 1))
    h.setOptionValue("time_limit", float(max(0.05, time_limit)))
    if not presolve:
        h.setOptionValue("presolve", "off")
    h.passModel(lp)
    h.run()
    status = h.getModelStatus()
    return status, h.modelStatusToString(status), float(h.getRunTime()), h


def min_change(rows: Rows, norm: str = "linf", time_limit: float = 60.0, seed: int = 0,
               bound: float = highspy.kHighsInf) -> LPResult:
    """Minimises ||Δ|| subject to the rows (each |Δ_j| <= bound)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, not {norm!r}")
    n, m = rows.n, len(rows)
    inf = highspy.kHighsInf
    idx = np.concatenate(rows.indices) if rows.indices else np.zeros(0, np.int64)
    val = np.concatenate(rows.values) if rows.values else np.zeros(0)
    indptr = np.asarray(rows.indptr, dtype=np.int64)
    if norm == "linf":
        # columns: Δ (n), t ; rows: constraints, then Δ_j - t <= 0 and -Δ_j - t <= 0
        ncol = n + 1
        cost = np.zeros(ncol)
        cost[n] = 1.0
        j = np.arange(n)
        extra_idx = np.stack([np.stack([j, np.full(n, n)], 1), np.stack([j, np.full(n, n)], 1)]).reshape(-1)
        extra_val = np.concatenate([np.tile([1.0, -1.0], n), np.tile([-1.0, -1.0], n)])
        extra_rows = 2 * n
        per_row = 2
    else:
        # columns: Δ (n), s (n) ; rows: Δ_j - s_j <= 0 and -Δ_j - s_j <= 0
        ncol = 2 * n
        cost = np.concatenate([np.zeros(n), np.ones(n)])
        j = np.arange(n)
        pair = np.stack([j, n + j], 1).reshape(-1)
        extra_idx = np.concatenate([pair, pair])
        extra_val = np.concatenate([np.tile([1.0, -1.0], n), np.tile([-1.0, -1.0], n)])
        extra_rows = 2 * n
        per_row = 2
    all_idx = np.concatenate([idx, extra_idx]).astype(np.int32)
    all_val = np.concatenate([val, extra_val])
    all_ptr = np.concatenate([indptr, indptr[-1] + per_row * np.arange(1, extra_rows + 1)]).astype(np.int32)
    lp = highspy.HighsLp()
    lp.num_col_ = ncol
    lp.num_row_ = m + extra_rows
    lp.col_cost_ = cost
    col_lower = np.full(ncol, -bound)
    col_upper = np.full(ncol, bound)
    col_lower[n:] = 0.0
    col_upper[n:] = inf
    lp.col_lower_ = col_lower
    lp.col_upper_ = col_upper
    lp.row_lower_ = np.concatenate([np.asarray(rows.lower, dtype=np.float64), np.full(extra_rows, -inf)])
    lp.row_upper_ = np.concatenate([np.asarray(rows.upper, dtype=np.float64), np.zeros(extra_rows)])
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.start_ = all_ptr
    lp.a_matrix_.index_ = all_idx
    lp.a_matrix_.value_ = all_val
    status, text, seconds, h = _run(lp, time_limit, seed, presolve=True)
    if status not in _DEFINITE:
        # HiGHS 1.15.1's dual simplex after presolve can stop with no status ("Not Set") on
        # an infeasible LP; solved again without presolve it reports what the LP is.
        first = text
        status, text, more, h = _run(lp, max(0.05, time_limit - seconds), seed, presolve=False)
        seconds += more
        text = f"{text} (after {first!r} with presolve)"
    if status != highspy.HighsModelStatus.kOptimal:
        return LPResult(text, None, seconds=seconds)
    x = np.asarray(h.getSolution().col_value, dtype=np.float64)
    return LPResult(text, x[:n].copy(), float(h.getInfo().objective_function_value), seconds)
