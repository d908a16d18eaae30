"""Results the way researchers use them, from a notebook or a script:

    from fixbench import results
    df = results.load("results/quick", "results/you2026@0.1")   # one or several studies
    results.summary(df)                  # approach × subject: runs, outcomes, mean ± std
    results.pairwise(df, "rr")           # per subject: p-values, Holm-adjusted, A12
    results.letter_groups(df, "rr")      # compact letter display per subject
    print(results.latex_tables(df))      # the papers' tables as LaTeX (tables.tex)

`load` reads the `results.parquet` files a study writes (a results folder, a folder holding
several, or the files themselves) into one frame with typed columns: categories for names and
statuses, nullable integers for counts and seeds, floats for every metric (`rr`, `nfr`,
`dacc`, and the evaluator's `m_*` columns such as `m_dasr`, `m_daaod`). Everything here
works on that frame alone: no ledger, no services."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from fixbench.analysis.aggregate import PAPER_TABLES, paper_tables, validate_results
from fixbench.analysis.statistics import (
    a12_magnitude,
    compact_letter_display,
    holm_adjust,
    mann_whitney_u,
    vargha_delaney_a12,
)
from fixbench.statuses import SCORED

RESULT_FILE = "results.parquet"
CATEGORIES = ("study", "approach", "level", "fault_id", "subject", "dataset", "architecture", "family", "state",
              "status")
INTEGERS = ("seed", "attempts", "infra_errors")
METRICS = ("acc_before", "acc_after", "rr", "nfr", "dacc", "repair_seconds", "job_seconds")
# What each metric is called in the papers, and whether higher is better.
METRIC_NAMES = {metric: (title, higher) for title, (metric, higher) in PAPER_TABLES.items()}


class ResultsError(ValueError):
    """A results source that cannot be read; the message names the path or column."""


def _parquet_files(source: str | Path) -> list[Path]:
    path = Path(source)
    if path.is_file():
        return [path]
    if path.is_dir():
        direct = path / RESULT_FILE
        files = [direct] if direct.is_file() else sorted(path.glob(f"*/{RESULT_FILE}"))
        if files:
            return files
        raise ResultsError(f"{path} holds no {RESULT_FILE} (nor do its sub-folders): is it a study's results folder?")
    raise ResultsError(f"{path} does not exist")


def typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with the documented column types (a copy)."""
    df = frame.copy()
    for col in df.columns:
        if col in CATEGORIES:
            df[col] = df[col].fillna("").astype(str).astype("category")
        elif col in INTEGERS:
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
        elif col in METRICS or col.startswith("m_"):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype(float)
    return df


def load(*sources: str | Path) -> pd.DataFrame:
    """Every job of the studies in `sources`, one row each, typed (see the module doc)."""
    if not sources:
        raise ResultsError("load() needs at least one results folder or parquet file")
    frames = []
    for source in sources:
        for path in _parquet_files(source):
            frame = pd.read_parquet(path)
            if "approach" not in frame.columns:
                raise ResultsError(f"{path} is not a fixbench results file (no 'approach' column)")
            if "study" not in frame.columns:
                frame["study"] = path.parent.name
            frames.append(frame)
    return typed(pd.concat(frames, ignore_index=True, sort=False))


def _scored(df: pd.DataFrame) -> pd.DataFrame:
    status = df["status"].astype(str)
    state = df["state"].astype(str) if "state" in df.columns else pd.Series("done", index=df.index)
    return df[status.isin(SCORED) & (state == "done")]


def summary(df: pd.DataFrame, metrics: Sequence[str] = ("rr", "nfr", "dacc", "repair_seconds")) -> pd.DataFrame:
    """(study, approach, subject) → runs, scored runs, the outcome counts and, per metric, the
    mean and standard deviation over the scored runs."""
    keys = [k for k in ("study", "approach", "subject") if k in df.columns]
    rows = []
    for key, group in df.groupby(keys, observed=True, sort=True):
        scored = _scored(group)
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row["runs"], row["scored"] = len(group), len(scored)
        row["outcomes"] = ", ".join(f"{s} {n}" for s, n in group["status"].astype(str).value_counts().sort_index().items())
        for metric in metrics:
            if metric in group.columns:
                values = scored[metric].dropna().astype(float)
                row[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
                row[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        rows.append(row)
    return pd.DataFrame(rows).set_index(keys)


def samples(df: pd.DataFrame, metric: str) -> dict[str, dict[str, np.ndarray]]:
    """subject → approach → the metric over the scored runs (approaches without any left out)."""
    if metric not in df.columns:
        raise ResultsError(f"the results have no column {metric!r}")
    out: dict[str, dict[str, np.ndarray]] = {}
    scored = _scored(df)
    for (subject, approach), group in scored.groupby(["subject", "approach"], observed=True, sort=True):
        values = group[metric].dropna().to_numpy(dtype=float)
        if values.size:
            out.setdefault(str(subject), {})[str(approach)] = values
    return out


def pairwise(df: pd.DataFrame, metric: str = "rr", higher_is_better: bool | None = None) -> pd.DataFrame:
    """Every pair of approaches per subject: means, the two-sided Mann-Whitney p-value, the
    Holm-adjusted p over the subject's pairs, Vargha-Delaney A12 (probability that a run of
    `a` beats one of `b` in the metric's better direction) and its magnitude."""
    higher = METRIC_NAMES.get(metric, (metric, True))[1] if higher_is_better is None else higher_is_better
    rows = []
    for subject, by_approach in samples(df, metric).items():
        pairs = list(itertools.combinations(sorted(by_approach), 2))
        if not pairs:
            continue
        p_values = []
        for a, b in pairs:
            x, y = by_approach[a], by_approach[b]
            # identical constant samples: no evidence of a difference (the test is undefined)
            same = np.unique(np.concatenate([x, y])).size == 1
            p = 1.0 if same else mann_whitney_u(x, y).p_value
            p_values.append(p)
            a12 = vargha_delaney_a12(x, y) if higher else vargha_delaney_a12(-x, -y)
            rows.append({"subject": subject, "a": a, "b": b, "n_a": x.size, "n_b": y.size, "mean_a": float(x.mean()),
                         "mean_b": float(y.mean()), "p_value": p, "a12": a12, "magnitude": a12_magnitude(a12)})
        for row, adjusted in zip(rows[-len(pairs):], holm_adjust(p_values), strict=True):
            row["p_holm"] = float(adjusted)
    columns = ["subject", "a", "b", "n_a", "n_b", "mean_a", "mean_b", "p_value", "p_holm", "a12", "magnitude"]
    return pd.DataFrame(rows, columns=columns)


def letter_groups(df: pd.DataFrame, metric: str = "rr", higher_is_better: bool | None = None) -> pd.DataFrame:
    """approach × subject compact letter display (Tukey HSD over the runs): approaches that
    share a letter do not differ significantly; "a" is the best group."""
    higher = METRIC_NAMES.get(metric, (metric, True))[1] if higher_is_better is None else higher_is_better
    table: dict[str, dict[str, str]] = {}
    for subject, by_approach in samples(df, metric).items():
        if len(by_approach) >= 2 and sum(v.size for v in by_approach.values()) > len(by_approach):
            table[subject] = compact_letter_display(by_approach, higher_is_better=higher)
    return pd.DataFrame(table).rename_axis(index="approach", columns="subject")


# ---- LaTeX ------------------------------------------------------------------------------
LEGEND = ("Mean over the scored runs of each approach on each subject. Letters: compact letter display "
          "per subject (Tukey HSD, $\\alpha = 0.05$); approaches sharing a letter do not differ "
          "significantly, \\emph{a} marks the best group. UNAD: unadaptable; CORR: corrupted output; "
          "FAIL: crash, time-out or out of memory; --: not run.")


def _latex_escape(text: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("$", "\\$"), ("#", "\\#"), ("_", "\\_"),
                 ("{", "\\{"), ("}", "\\}"), ("~", "\\textasciitilde{}"), ("^", "\\textasciicircum{}")):
        text = text.replace(a, b)
    return text.replace("–", "--").replace("±", "$\\pm$").replace("⇑", "$\\Uparrow$").replace("Δ", "$\\Delta$")


def tables_to_latex(tables: dict[str, pd.DataFrame]) -> str:
    """Tables (title → approach × subject frame of cells) as one LaTeX fragment: a `table`
    environment each, via pandas' Styler, with a caption that carries the legend. Plain
    `tabular` rules, so it compiles with LaTeX's base packages alone."""
    parts = ["% fixbench: the papers' tables. \\input{tables.tex} in a document."]
    for title, table in tables.items():
        label = "".join(ch for ch in title.lower() if ch.isalnum()) or "table"
        shown = table.copy()
        shown.index = [_latex_escape(str(i)) for i in shown.index]
        shown.columns = [_latex_escape(str(c)) for c in shown.columns]
        shown = shown.map(lambda v: _latex_escape(str(v)))
        shown.index.name, shown.columns.name = "approach", None
        parts.append(shown.style.to_latex(
            column_format="l|" + "r" * len(shown.columns), hrules=False, position="htbp", position_float="centering",
            caption=f"{_latex_escape(title)} per approach and subject. {LEGEND}", label=f"tab:fixbench-{label}"))
    return "\n".join(parts) + "\n"


def latex_tables(df: pd.DataFrame, letters: bool = True) -> str:
    """The papers' tables (RR, NFR, ⇑ACC, ΔASR, ΔAAOD, time) of a results frame as LaTeX,
    with the letter groups (see `tables_to_latex`)."""
    frame = validate_results(pd.DataFrame(df).astype({c: object for c in df.columns if str(df[c].dtype) == "category"}))
    return tables_to_latex(paper_tables(frame, letters=letters))


def write_latex(tables: dict[str, pd.DataFrame], out_dir: str | Path) -> Path:
    """tables.tex beside tables.md in a study's results folder."""
    path = Path(out_dir) / "tables.tex"
    path.write_text(tables_to_latex(tables), encoding="utf-8")
    return path


def studies(df: pd.DataFrame) -> list[str]:
    return sorted(str(s) for s in df["study"].unique()) if "study" in df.columns else []


def leaderboard(df: pd.DataFrame, metric: str = "rr") -> pd.DataFrame:
    """approach × study: the mean over subjects of the per-subject mean of `metric` (as the
    papers average their cells), for comparing studies that share a results folder."""
    cells = _scored(df).groupby(["study", "approach", "subject"], observed=True)[metric].mean().dropna()
    if cells.empty:
        return pd.DataFrame()
    board = cells.groupby(["approach", "study"], observed=True).mean().unstack("study")
    return board.sort_values(by=list(board.columns), ascending=not METRIC_NAMES.get(metric, ("", True))[1])
