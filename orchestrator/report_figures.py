"""The report's views of the spread and the significance of results: per-seed distributions,
effect sizes against each baseline, and a critical-difference diagram across faults. Laid out
to stay readable at twenty approaches × ten subjects."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from fixbench import results
from fixbench.statuses import SCORED
from orchestrator.svg_plots import palette, pyplot, to_svg

# metric column, axis label; the side effects only where the evaluator measured them
DISTRIBUTIONS = (("rr", "RR %"), ("nfr", "NFR %"), ("dasr", "ΔASR (points)"), ("daaod", "ΔAAOD"))


def wrap_title(text: str, width: int = 30) -> str:
    """A panel title or tick label on several lines, so that it stays within its panel."""
    import textwrap

    return "\n".join(textwrap.wrap(str(text), width)) or str(text)


def plural(n: int, word: str) -> str:
    """'1 fault', '2 faults', '1 approach', '3 approaches'."""
    if n == 1:
        return f"1 {word}"
    return f"{n} {word}es" if word.endswith(("ch", "sh", "s", "x")) else f"{n} {word}s"


def _scored(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["state"] == "done") & df["status"].isin(SCORED)]


def plot_distribution(df: pd.DataFrame, approaches: Sequence[str], subjects: Sequence[str], metric: str,
                      label: str) -> str | None:
    """One panel per subject: a box per approach over its seeds, every seed as a point."""
    scored = _scored(df)
    if metric not in scored.columns or scored[metric].dropna().empty:
        return None
    shown = [s for s in subjects if scored[(scored["subject"] == s)][metric].notna().any()]
    plt = pyplot()
    colours = palette(approaches)
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, (0.2 * len(approaches) + 1.0) * nrows), squeeze=False)
    rng = np.random.default_rng(0)  # vertical jitter only
    for ax, subject in zip(axes.flat, shown, strict=False):
        sub = scored[scored["subject"] == subject]
        data = [sub[sub["approach"] == a][metric].dropna().to_numpy(dtype=float) for a in approaches]
        positions = [i for i, d in enumerate(data) if d.size]
        if positions:
            ax.boxplot([data[i] for i in positions], positions=positions, widths=0.5, showfliers=False, vert=False,
                       medianprops={"color": "black"})
        for i, values in enumerate(data):
            if values.size:
                ax.scatter(values, i + rng.uniform(-0.12, 0.12, values.size), s=10, color=colours[approaches[i]],
                           zorder=3)
        ax.set_yticks(range(len(approaches)), approaches, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(wrap_title(subject), fontsize=8)
        ax.set_xlabel(label, fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    fig.tight_layout()
    return to_svg(fig)


def distribution_plots(df: pd.DataFrame, approaches: Sequence[str], subjects: Sequence[str]) -> list[tuple[str, str | None]]:
    return [(f"{label.split()[0]} per seed (box: quartiles over seeds; points: one seed each)",
             plot_distribution(df, approaches, subjects, metric, label)) for metric, label in DISTRIBUTIONS]


def effect_sizes_html(df: pd.DataFrame, metric: str = "rr") -> str:
    """Per baseline (Describe level `baseline`): every other approach's A12 against it on each
    subject, with the Holm-adjusted two-sided Mann-Whitney p-value."""
    scored = _scored(df)
    if scored.empty or metric not in scored.columns:
        return ""
    pairs = results.pairwise(scored.astype({"status": str}), metric)
    if pairs.empty:
        return ""
    levels = df.groupby("approach")["level"].first().to_dict() if "level" in df.columns else {}
    baselines = sorted(a for a, lvl in levels.items() if lvl == "baseline") or sorted(set(pairs["a"]) | set(pairs["b"]))[:1]
    esc = html.escape
    parts = [f"<h2>Effect sizes ({esc(metric.upper())})</h2><p>Vargha-Delaney A12: the probability that a run of the "
             "approach beats a run of the baseline (0.5: no difference; ≥ 0.71 large); in brackets the two-sided "
             "Mann-Whitney p-value over the seeds, Holm-adjusted per subject.</p>"]
    for base in baselines:
        rows: dict[str, dict[str, str]] = {}
        for _, r in pairs.iterrows():
            if base not in (r["a"], r["b"]):
                continue
            other, a12 = (r["a"], r["a12"]) if r["b"] == base else (r["b"], 1.0 - r["a12"])
            rows.setdefault(other, {})[r["subject"]] = f"{a12:.2f} (p {r['p_holm']:.3f})"
        if not rows:
            continue
        table = pd.DataFrame(rows).T.sort_index().fillna("–")
        head = "".join(f"<th>{esc(str(c))}</th>" for c in ["approach", *table.columns])
        body = "".join("<tr><th>" + esc(str(i)) + "</th>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>"
                       for i, row in zip(table.index, table.itertuples(index=False), strict=True))
        parts.append(f"<table><caption>A12 against {esc(base)}</caption><thead><tr>{head}</tr></thead>"
                     f"<tbody>{body}</tbody></table>")
    return "".join(parts) if len(parts) > 1 else ""


def plot_critical_difference(df: pd.DataFrame, metric: str = "rr") -> str | None:
    """Ranks of the approaches across faults (the mean of `metric` over seeds per fault) with
    autorank: a critical-difference diagram (Friedman + Nemenyi) when the test is
    non-parametric, a confidence-interval plot otherwise. Needs at least two faults and two
    approaches that every fault scored; None otherwise (or without autorank)."""
    try:
        from autorank import autorank, plot_stats
    except ImportError:
        return None
    scored = _scored(df)
    if metric not in scored.columns:
        return None
    cells = scored.groupby(["fault_id", "approach"])[metric].mean().unstack("approach").dropna(axis=1)
    if cells.shape[0] < 2 or cells.shape[1] < 2:
        return None
    # autorank needs some spread: faults on which every approach scored the same tell nothing
    cells = cells.loc[cells.std(axis=1) > 0]
    if cells.shape[0] < 2:
        return None
    plt = pyplot()
    try:
        ranked = autorank(cells, alpha=0.05, verbose=False, order="descending")
        ax = plot_stats(ranked, allow_insignificant=True)
    except (ValueError, KeyError) as exc:  # too few populations or samples for its tests
        del exc
        plt.close("all")
        return None
    fig = ax.figure if hasattr(ax, "figure") else plt.gcf()
    fig.set_size_inches(max(6.0, 0.35 * cells.shape[1] + 4), max(2.2, 0.18 * cells.shape[1] + 1.5))
    return to_svg(fig)
