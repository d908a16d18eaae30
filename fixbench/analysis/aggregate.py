"""Tables in the papers' layout from a tidy results frame (one row per job: approach,
subject, seed, status, metrics…), and a plain-text renderer that needs no tabulate.

A cell is the mean over the runs whose status produced a model worth scoring; when no run
did, the cell shows the dominant outcome as the papers do: UNAD (unadaptable), CORR
(corrupted output), FAIL (crash, timeout, out of memory, no model).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from fixbench.analysis.errors import EvaluationError
from fixbench.analysis.statistics import compact_letter_display
from fixbench.statuses import LABEL_ORDER, SCORED, normalise, table_label

REQUIRED_COLUMNS = ("approach", "subject", "seed")
# A frame without a status column (or an evaluator's "OK") is scored too.
SCORED_STATUSES = frozenset({"", "OK", *SCORED})
MISSING = "–"

# The study's tables: which metric each shows, and its direction (for CLD letters).
PAPER_TABLES: dict[str, tuple[str, bool]] = {
    "RR": ("rr", True),
    "NFR": ("nfr", False),
    "⇑ACC": ("dacc", True),
    "ΔASR": ("dasr", False),
    "ΔAAOD": ("daaod", False),
}


def validate_results(df: pd.DataFrame) -> pd.DataFrame:
    """Returns `df` with a normalised `status` column (upper case, enum prefixes removed;
    empty when absent), or raises EvaluationError naming missing columns."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise EvaluationError(f"results frame lacks column(s) {missing}; it has {list(df.columns)}")
    out = df.copy()
    out["status"] = [normalise(v) for v in df["status"]] if "status" in df.columns else ""
    return out


def _outcome_label(statuses: Iterable[str]) -> str:
    labels = [table_label(s) for s in statuses]
    if not labels:
        return MISSING
    # The most common outcome; ties go to the most specific label (LABEL_ORDER).
    counts = {lab: labels.count(lab) for lab in LABEL_ORDER}
    return max(counts, key=lambda k: (counts[k], -LABEL_ORDER.index(k)))


def _order(values: Iterable[str], preferred: Sequence[str] | None) -> list[str]:
    present = list(dict.fromkeys(values))
    if preferred is None:
        return sorted(present)
    return [v for v in preferred if v in present] + sorted(v for v in present if v not in preferred)


def metric_table(
    df: pd.DataFrame,
    metric: str,
    approaches: Sequence[str] | None = None,
    subjects: Sequence[str] | None = None,
    decimals: int = 2,
    with_std: bool = False,
    formatter: Callable[[float], str] | None = None,
    letters: bool = False,
    higher_is_better: bool = True,
) -> pd.DataFrame:
    """approach × subject table of strings for one metric.

    Cells hold the mean over scored runs (e.g. "73.97", or "73.97 ± 1.20" with
    `with_std`), the outcome label when no run was scored, and "–" where no job ran.
    `letters=True` appends compact-letter-display groups computed per subject across
    approaches (Tukey HSD over the runs), e.g. "73.97 a".
    """
    df = validate_results(df)
    if metric not in df.columns:
        raise EvaluationError(f"results frame has no metric column {metric!r}")
    fmt = formatter or (lambda v: f"{v:.{decimals}f}")
    rows = _order(df["approach"], approaches)
    cols = _order(df["subject"], subjects)
    table = pd.DataFrame(
        MISSING,
        index=pd.Index(rows, name="approach"),
        columns=pd.Index(cols, name="subject"),
    )
    for subject in cols:
        sub = df[df["subject"] == subject]
        scored_samples: dict[str, np.ndarray] = {}
        for approach in rows:
            runs = sub[sub["approach"] == approach]
            if runs.empty:
                continue
            scored = runs[runs["status"].isin(SCORED_STATUSES)]
            values = pd.to_numeric(scored[metric], errors="coerce").dropna().to_numpy(dtype=float)
            if values.size == 0:
                table.loc[approach, subject] = _outcome_label(runs["status"]) if scored.empty else MISSING
                continue
            scored_samples[approach] = values
            cell = fmt(float(values.mean()))
            if with_std and values.size > 1:
                cell += f" ± {fmt(float(values.std(ddof=1)))}"
            table.loc[approach, subject] = cell
        if letters and len(scored_samples) >= 2 and sum(v.size for v in scored_samples.values()) > len(scored_samples):
            groups = compact_letter_display(scored_samples, higher_is_better=higher_is_better)
            for approach, lab in groups.items():
                table.loc[approach, subject] = f"{table.loc[approach, subject]} {lab}"
    return table


def format_duration(seconds: float) -> str:
    """The papers' time format: 17s, 4m15s, 1h34m, 135h (minutes dropped from 100 h)."""
    if seconds is None or math.isnan(seconds):
        return MISSING
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    hours, minutes = s // 3600, (s % 3600) // 60
    return f"{hours}h" if hours >= 100 else f"{hours}h{minutes:02d}m"


def time_table(df: pd.DataFrame, column: str = "repair_seconds", **kwargs) -> pd.DataFrame:
    """approach × subject table of mean repair wall time in the papers' format."""
    return metric_table(df, column, formatter=format_duration, **kwargs)


def paper_tables(df: pd.DataFrame, time_column: str = "repair_seconds", **kwargs) -> dict[str, pd.DataFrame]:
    """The study's tables for every metric column present: RR, NFR, ⇑ACC, ΔASR, ΔAAOD, time."""
    tables = {}
    for title, (metric, higher) in PAPER_TABLES.items():
        if metric in df.columns:
            tables[title] = metric_table(df, metric, higher_is_better=higher, **kwargs)
    if time_column in df.columns:
        tables["time"] = time_table(df, time_column, **kwargs)
    return tables


def category_means(df: pd.DataFrame, metric: str, categories: Mapping[str, str]) -> pd.Series:
    """Plain mean of the scored approach × subject cell means per category (how the study
    computes its model-/layer-/neuron-level averages); unscored cells are left out."""
    df = validate_results(df)
    unknown = sorted(set(df["approach"]) - set(categories))
    if unknown:
        raise EvaluationError(f"approach(es) {unknown} have no category")
    scored = df[df["status"].isin(SCORED_STATUSES)].copy()
    scored[metric] = pd.to_numeric(scored[metric], errors="coerce")
    cells = scored.dropna(subset=[metric]).groupby(["approach", "subject"])[metric].mean().reset_index()
    cells["category"] = cells["approach"].map(categories)
    return cells.groupby("category")[metric].mean()


def render_text(table: pd.DataFrame, title: str | None = None) -> str:
    """A fixed-width plain-text rendering: header row, rule, one line per row; the first
    column is the index, text left-aligned, everything else right-aligned."""
    index_name = table.index.name or ""
    header = [index_name] + [str(c) for c in table.columns]
    body = [
        [str(i)] + ["" if v is None else str(v) for v in row]
        for i, row in zip(table.index, table.itertuples(index=False), strict=True)
    ]
    widths = [max(len(r[k]) for r in [header] + body) for k in range(len(header))]

    def line(cells):
        first = cells[0].ljust(widths[0])
        rest = [c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join([first] + rest).rstrip()

    lines = ([title] if title else []) + [line(header), "  ".join("-" * w for w in widths)] + [line(r) for r in body]
    return "\n".join(lines) + "\n"
