"""report.html (self-contained: inline SVG plots, inline CSS, no script, no network) and the
paper tables (`tables.txt`, `tables.md`) of a study, built from its tidy results frame.

Plots: RR / NFR per approach × subject (mean bars, std error bars over seeds), a ΔASR /
ΔAAOD heat map (when measured), accuracy vs NFR per job with each subject's Pareto front,
repair time on a log axis, and outcome counts per approach. Tables in the papers' layout
come from `evaluator.aggregate` (compact letters per subject); for training-recipe faults a
Kim et al. table adds the significance verdict and the improvement ratio.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fixbench.analysis.aggregate import PAPER_TABLES, format_duration, metric_table, render_text, time_table
from fixbench.analysis.localisation import localisation_table
from fixbench.analysis.recipe_repair import improvement_ratio, patch_similarity, recipe_patch, repaired_by_significance
from fixbench.results import write_latex
from fixbench.statuses import SCORED, table_label
from orchestrator.job_logs import log_name
from orchestrator.report_figures import (
    distribution_plots,
    effect_sizes_html,
    plot_critical_difference,
    plural,
    wrap_title,
)
from orchestrator.subjects import STAND_IN_MARK
from orchestrator.svg_plots import palette, pyplot, to_svg

# Metrics the evaluator returns that the results frame keeps under an "m_" prefix.
SIDE_EFFECT_METRICS = ("asr_before", "asr_after", "dasr", "aaod_before", "aaod_after", "daaod", "btc", "bec")
RECIPE_FAMILY = "training_recipe"
TIME_FLOOR_SECONDS = 1e-3
_STATUS_COLOURS = {
    "REPAIRED": "#2ca02c", "NOT_REPAIRED": "#98df8a", "UNADAPTABLE": "#7f7f7f", "CORRUPTED_OUTPUT": "#d62728",
    "TOOL_ERROR": "#ff7f0e", "TIMEOUT": "#bcbd22", "OOM": "#8c564b", "CANCELLED": "#c7c7c7",
    "INFRA_ERROR": "#e377c2", "PENDING": "#1f77b4",
}


class ReportError(ValueError):
    """A results frame the report cannot be built from; the message names the column."""


# --- the frame ------------------------------------------------------------------------
def report_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The results frame with side-effect metrics under their plain names (dasr, daaod…)
    and `outcome` = the status, or PENDING for jobs not done yet."""
    missing = [c for c in ("approach", "fault_id", "seed", "status", "state") if c not in frame.columns]
    if missing:
        raise ReportError(f"results frame lacks column(s) {missing}")
    df = frame.copy()
    for metric in SIDE_EFFECT_METRICS:
        if metric not in df.columns and f"m_{metric}" in df.columns:
            df[metric] = pd.to_numeric(df[f"m_{metric}"], errors="coerce")
    if "subject" not in df.columns:
        df["subject"] = df["fault_id"]
    df["outcome"] = np.where(df["state"] == "done", df["status"].astype(str), "PENDING")
    for col in ("rr", "nfr", "dacc", "acc_before", "acc_after", "repair_seconds", "job_seconds"):
        if col in df.columns:
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


def approach_order(frame: pd.DataFrame, names: Sequence[str] | None = None) -> list[str]:
    """Approaches alphabetically, the baselines last as the floor rows: those whose Describe
    level (recorded in the ledger) is `baseline`. `names` limits it to those approaches."""
    names = sorted(set(frame["approach"] if names is None else names))
    levels = frame.groupby("approach")["level"].first().to_dict() if "level" in frame.columns else {}
    baselines = {a for a in names if levels.get(a) == "baseline"}
    return [a for a in names if a not in baselines] + sorted(baselines)


def subject_order(df: pd.DataFrame, faults: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Subjects in suite order (the recorded fault order), then any others by name."""
    order = {}
    for _, row in df[["fault_id", "subject"]].drop_duplicates().iterrows():
        meta = faults.get(row["fault_id"], {})
        order.setdefault(row["subject"], (int(meta.get("order", 10**6)), str(row["subject"])))
    return sorted(order, key=order.get)


def _has(df: pd.DataFrame, metric: str) -> bool:
    return metric in df.columns and pd.to_numeric(df[metric], errors="coerce").notna().any()


# --- tables ---------------------------------------------------------------------------
def paper_tables(df: pd.DataFrame, faults: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, pd.DataFrame]:
    """RR, NFR, ⇑ACC (and ΔASR, ΔAAOD when measured) per approach × subject with compact
    letters, and the repair time, from the done jobs; plus Kim et al.'s table when the
    study has training-recipe faults."""
    faults = faults or {}
    df = report_frame(df)
    done = df[df["state"] == "done"]
    if done.empty:
        return {}
    rows, cols = approach_order(done), subject_order(done, faults)
    tables = {}
    for title, (metric, higher) in PAPER_TABLES.items():
        if _has(done, metric):
            tables[title] = metric_table(done, metric, approaches=rows, subjects=cols, letters=True,
                                         higher_is_better=higher)
    if _has(done, "repair_seconds"):
        tables["time"] = time_table(done, "repair_seconds", approaches=rows, subjects=cols)
    recipe = kim_table(done, faults)
    if recipe is not None:
        tables["repaired (Kim et al.)"] = recipe
    patches = patch_table(done, faults)
    if patches is not None:
        tables["patch complexity and similarity (Kim et al.)"] = patches
    # Localisers (DeepFD, DeepDiagnosis) against the mutated recipe fields: top-1 / top-3 hits.
    localised = localisation_table(done, faults)
    if localised is not None:
        tables["localisation (recipe fields, top-1 / top-3)"] = localised
    return tables


def kim_table(df: pd.DataFrame, faults: Mapping[str, Mapping[str, Any]], alpha: float = 0.05) -> pd.DataFrame | None:
    """approach × recipe fault: "yes IR 0.83" when the repaired models' test accuracies beat
    the faulty trainings' (Mann-Whitney, one-sided, p < alpha, mean higher), else "no IR …";
    IR = (acc_repaired − acc_faulty) / (acc_fixed − acc_faulty) from the fault's ground
    truth. None when the study has no training-recipe fault with recorded accuracies."""
    recipe_faults = [fid for fid, meta in faults.items()
                     if meta.get("family") == RECIPE_FAMILY and meta.get("ground_truth", {}).get("faulty_accuracies")]
    sub = df[df["fault_id"].isin(recipe_faults)]
    if sub.empty:
        return None
    rows = approach_order(sub)
    cols = sorted(set(sub["fault_id"]), key=lambda f: (faults[f].get("order", 0), f))
    table = pd.DataFrame("–", index=pd.Index(rows, name="approach"), columns=pd.Index(cols, name="fault"))
    for (approach, fid), runs in sub.groupby(["approach", "fault_id"]):
        truth = faults[fid]["ground_truth"]
        # A run that hands back no new model leaves the fault as it was: its accuracy is the
        # faulty recipe's, i.e. the mean of the faulty trainings. The bundled faulty model is
        # only the seed-0 training, which may lie above that mean, so scoring it would let
        # doing nothing "repair" the fault (issue 18).
        unchanged = ~_model_changed(runs)
        usable = runs["outcome"].isin(SCORED) & (runs["acc_after"].notna() | unchanged)
        if not usable.any():
            table.loc[approach, fid] = table_label(runs["outcome"].value_counts().index[0])
            continue
        scored = runs["acc_after"].astype(float).where(~unchanged, float(np.mean(truth["faulty_accuracies"])))[usable]
        verdict = repaired_by_significance(truth["faulty_accuracies"], scored.to_numpy(), alpha=alpha)
        fixed = truth.get("fixed_accuracies")
        ir = improvement_ratio(scored.to_numpy(), truth["faulty_accuracies"], fixed) if fixed else math.nan
        table.loc[approach, fid] = ("yes" if verdict.repaired else "no") + (f" IR {ir:.2f}" if math.isfinite(ir) else "")
    total = (table.map(lambda v: str(v).startswith("yes"))).sum(axis=1)
    table["repaired faults"] = [f"{int(n)}/{len(cols)}" for n in total]
    return table


def patch_table(df: pd.DataFrame, faults: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame | None:
    """approach × recipe fault: "PC 1.3 sim 0.80", over the runs that handed back a model of
    another recipe. PC (patch complexity) is how many recipe fields the repaired recipe changes
    from the faulty one; sim is the patch's similarity to the ground-truth fix, the share of the
    fields the fault's mutation changed that the patch changes too (Kim et al.'s asymmetric
    Jaccard by field). The last columns give both over every such run of the approach. None
    when no run of a training-recipe fault names its repaired recipe."""
    if "repaired_recipe" not in df.columns:
        return None
    recipe_faults = {fid for fid, meta in faults.items()
                     if meta.get("family") == RECIPE_FAMILY and meta.get("recipe")}
    sub = df[df["fault_id"].isin(recipe_faults) & (df["repaired_recipe"].fillna("") != "") & _model_changed(df)]
    if sub.empty:
        return None
    rows = approach_order(sub)
    cols = sorted(recipe_faults & set(df["fault_id"]), key=lambda f: (faults[f].get("order", 0), f))
    table = pd.DataFrame("–", index=pd.Index(rows, name="approach"), columns=pd.Index(cols, name="fault"))
    every: dict[str, list[tuple[int, float]]] = {a: [] for a in rows}
    for (approach, fid), runs in sub.groupby(["approach", "fault_id"]):
        faulty = faults[fid]["recipe"]
        truth = faults[fid].get("ground_truth", {}).get("changed_fields") or []
        measured = []
        for text in runs["repaired_recipe"]:
            patch = recipe_patch(faulty, json.loads(text))
            measured.append((len(patch), patch_similarity(patch, truth) if truth else math.nan))
        every[approach].extend(measured)
        table.loc[approach, fid] = _patch_cell(measured)
    table["all faults"] = [_patch_cell(every[a]) for a in rows]
    return table


def _patch_cell(measured: Sequence[tuple[int, float]]) -> str:
    if not measured:
        return "–"
    pc = float(np.mean([m[0] for m in measured]))
    sims = [m[1] for m in measured if math.isfinite(m[1])]
    return f"PC {pc:.1f}" + (f" sim {np.mean(sims):.2f}" if sims else "")


def _model_changed(runs: pd.DataFrame) -> pd.Series:
    """True for runs whose returned model differs from the faulty one. Frames without
    `model_changed` fall back on a non-empty repaired digest or a REPAIRED outcome."""
    digest = runs["repaired_sha256"].fillna("").astype(str) if "repaired_sha256" in runs.columns else \
        pd.Series("", index=runs.index)
    digest = (digest != "") | (runs["outcome"] == "REPAIRED")
    if "model_changed" in runs.columns:
        flag = runs["model_changed"]
        known = flag.notna()
        return pd.Series(np.where(known, flag.fillna(False).astype(bool), digest), index=runs.index)
    return digest


def render_markdown(table: pd.DataFrame, title: str | None = None) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped)."""
    def cell(v) -> str:
        return str(v).replace("|", "\\|")

    head = [table.index.name or ""] + [cell(c) for c in table.columns]
    lines = ([f"### {title}", ""] if title else []) + ["| " + " | ".join(head) + " |",
                                                       "|" + "|".join(["---"] + ["---:"] * len(table.columns)) + "|"]
    for idx, row in zip(table.index, table.itertuples(index=False), strict=True):
        lines.append("| " + " | ".join([cell(idx)] + [cell(v) for v in row]) + " |")
    return "\n".join(lines) + "\n"


def _html_table(table: pd.DataFrame, caption: str = "") -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(str(c))}</th>" for c in [table.index.name or ""] + list(table.columns))
    body = "".join(
        "<tr><th>" + esc(str(i)) + "</th>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>"
        for i, row in zip(table.index, table.itertuples(index=False), strict=True))
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# Pending causes that a second run can clear; the others need the spec or the fault fixed.
RESUMABLE = ("INFRA_ERROR", "CANCELLED", "not run")


def pending_note(df: pd.DataFrame) -> str:
    """What to do about the jobs not done: resume only helps those an infrastructure error or
    a Ctrl-C left pending; a refused evaluation or a broken fault repeats on every run."""
    pending = df[df["state"] != "done"]
    if pending.empty:
        return ""
    causes = pending["status"].astype(str).str.extract(r"PENDING \((.*)\)")[0].fillna("not run")
    resumable = int(causes.isin(RESUMABLE).sum())
    stuck = causes[~causes.isin(RESUMABLE)].value_counts()
    parts = [f"{plural(len(pending), 'job')} not done yet (PENDING)."]
    if resumable:
        parts.append(f"{resumable} of them (infrastructure errors, cancelled or not run) resume when the study "
                     "runs again; then `fixbench study report` rebuilds this page.")
    if len(stuck):
        why = ", ".join(f"{n} {cause}" for cause, n in stuck.items())
        parts.append(f"Resuming will not help the others ({why}): the evaluator refused them or the fault itself "
                     "fails; their messages in the Jobs table say what to fix in the study or the fault.")
    return " ".join(parts)


def robustness_row(df: pd.DataFrame, fault: str, common: Mapping[str, Any]) -> dict[str, Any]:
    """A fault's robustness inputs, counting only the models the evaluator actually attacked:
    a fault whose attack was refused (the torch / onnxruntime parity gate) attacked none."""
    rows = df[df["fault_id"] == fault]
    attacked = int(rows["m_dasr"].notna().sum()) if "m_dasr" in rows.columns else 0
    return {"fault": fault,
            "common test inputs": len(common["indices"]) if attacked else f"{len(common['indices'])} (none attacked)",
            "classified correctly by every model": common["candidates"],
            "models attacked": attacked if attacked else "0: the evaluator refused the attack (see the jobs' notes)"}


def jobs_html(df: pd.DataFrame, log_dir: Path | None = None) -> str:
    """Every job with its status and message, linked to its log (every attempt and the lines
    the approach streamed) where `log_dir` holds one."""
    esc = html.escape
    rows = []
    for _, r in df.sort_values(["approach", "fault_id", "seed"]).iterrows():
        name = log_name(str(r.get("job_key", "")))
        has_log = log_dir is not None and (log_dir / name).is_file()
        link = f"<a href='{esc(name)}'>log</a>" if has_log else ""
        rows.append(f"<tr><th>{esc(str(r['approach']))}</th><td>{esc(str(r['fault_id']))}</td><td>{int(r['seed'])}</td>"
                    f"<td>{esc(str(r['status']))}</td><td>{esc(str(r.get('message') or ''))}</td><td>{link}</td></tr>")
    head = "".join(f"<th>{c}</th>" for c in ("approach", "fault", "seed", "status", "message", ""))
    return f"<table class='jobs'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def status_counts(df: pd.DataFrame) -> pd.DataFrame:
    """approach × outcome job counts (PENDING for jobs not done), with a total column."""
    df = report_frame(df)
    counts = pd.crosstab(df["approach"], df["outcome"])
    ordered = [s for s in _STATUS_COLOURS if s in counts.columns] + sorted(c for c in counts.columns
                                                                           if c not in _STATUS_COLOURS)
    counts = counts[ordered].reindex(approach_order(df, counts.index))
    counts["total"] = counts.sum(axis=1)
    counts.index.name, counts.columns.name = "approach", None
    return counts


def subject_table(df: pd.DataFrame, faults: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per fault: subject, dataset (stand-in or real), model, family, operator,
    the faulty model's test accuracy."""
    rows = []
    for fid in sorted(set(df["fault_id"]), key=lambda f: (faults.get(f, {}).get("order", 10**6), f)):
        meta = faults.get(fid, {})
        subject = df.loc[df["fault_id"] == fid, "subject"].iloc[0]
        stand_in = bool(meta.get("stand_in"))
        rows.append({
            "fault": fid, "subject": subject, "dataset": meta.get("dataset", "?"),
            "data": f"procedural stand-in for {meta.get('stands_in_for') or '?'}" if stand_in else "real",
            "model": meta.get("architecture", "?"), "family": meta.get("family", "?"),
            "operator": meta.get("operator") or "–",
            "test acc %": f"{meta['metrics']['test_accuracy']:.2f}" if "test_accuracy" in meta.get("metrics", {}) else "–",
        })
    return pd.DataFrame(rows).set_index("fault") if rows else pd.DataFrame()


def write_tables(tables: Mapping[str, pd.DataFrame], out_dir: str | Path, header: str = "") -> tuple[Path, Path]:
    """tables.txt (fixed-width) and tables.md next to the results."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    txt, md = out / "tables.txt", out / "tables.md"
    txt.write_text((header + "\n\n" if header else "") + "\n".join(render_text(t, k) for k, t in tables.items()))
    md.write_text((f"{header}\n\n" if header else "") + "\n".join(render_markdown(t, k) for k, t in tables.items()))
    return txt, md


# --- plots ----------------------------------------------------------------------------
def _scored(df: pd.DataFrame) -> pd.DataFrame:
    return df[(df["state"] == "done") & df["outcome"].isin(SCORED)]


def plot_metric_bars(df: pd.DataFrame, approaches: Sequence[str], subjects: Sequence[str], metric: str,
                     label: str) -> str | None:
    """One panel per subject, one horizontal bar per approach (mean ± std over seeds), the
    approaches named on the axis in their colours; a mean of exactly 0 is marked on the axis
    so that it stays visible. Small multiples stay readable at twenty approaches × ten subjects
    where grouped bars would not."""
    scored = _scored(df)
    if scored.empty or not _has(scored, metric):
        return None
    shown = [s for s in subjects if scored[scored["subject"] == s][metric].notna().any()]
    plt = pyplot()
    colours = palette(approaches)
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, (0.2 * len(approaches) + 1.0) * nrows), squeeze=False)
    y = np.arange(len(approaches))
    for ax, subject in zip(axes.flat, shown, strict=False):
        sub = scored[scored["subject"] == subject]
        means, stds = [], []
        for approach in approaches:
            v = sub[sub["approach"] == approach][metric].dropna()
            means.append(v.mean() if len(v) else np.nan)
            stds.append(v.std(ddof=1) if len(v) > 1 else 0.0)
        heights = np.nan_to_num(means)
        ax.barh(y, heights, xerr=stds, color=[colours[a] for a in approaches], edgecolor="black", linewidth=0.3,
                error_kw={"elinewidth": 0.8}, capsize=2)
        zero = np.isclose(heights, 0.0) & ~np.isnan(np.asarray(means, dtype=float))
        if zero.any():  # a zero-length bar is invisible: mark it on the axis
            ax.scatter(np.zeros(int(zero.sum())), y[zero], marker="|", s=60, color="black", zorder=3)
        ax.axvline(0, color="black", lw=0.6)
        ax.set_yticks(y, approaches, fontsize=7)
        for tick, approach in zip(ax.get_yticklabels(), approaches, strict=True):
            tick.set_color(colours[approach])  # the axis is the legend
        ax.invert_yaxis()
        ax.set_xlabel(label, fontsize=8)
        ax.set_title(wrap_title(subject), fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    fig.tight_layout()
    return to_svg(fig)


def plot_side_effect_heatmap(df: pd.DataFrame, approaches: Sequence[str], subjects: Sequence[str]) -> str | None:
    """ΔASR (points) and ΔAAOD heat maps of the mean over scored runs; None when neither
    was measured."""
    scored = _scored(df)
    metrics = [(m, t) for m, t in (("dasr", "ΔASR (points)"), ("daaod", "ΔAAOD")) if _has(scored, m)]
    if not metrics:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.5, 1.2 * len(subjects) + 2.5) * len(metrics),
                                                       0.45 * len(approaches) + 1.8), squeeze=False)
    for ax, (metric, title) in zip(axes[0], metrics, strict=True):
        grid = np.full((len(approaches), len(subjects)), np.nan)
        for i, a in enumerate(approaches):
            for j, s in enumerate(subjects):
                v = scored[(scored["approach"] == a) & (scored["subject"] == s)][metric].dropna()
                if len(v):
                    grid[i, j] = v.mean()
        limit = np.nanmax(np.abs(grid)) if np.isfinite(grid).any() else 1.0
        limit = limit if limit > 0 else 1.0
        # Diverging: red where the side effect grew (worse robustness / fairness), blue where it shrank.
        image = ax.imshow(np.ma.masked_invalid(grid), cmap="RdBu_r", vmin=-limit, vmax=limit, aspect="auto")
        for i in range(len(approaches)):
            for j in range(len(subjects)):
                text = "n/a" if np.isnan(grid[i, j]) else (f"{grid[i, j]:.2f}" if metric == "dasr" else f"{grid[i, j]:.3f}")
                dark = not np.isnan(grid[i, j]) and abs(grid[i, j]) > 0.6 * limit
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color="white" if dark else "black")
        # upright names need no more room than a column: rotated ones overlap their neighbours
        ax.set_xticks(range(len(subjects)), [wrap_title(s, 14) for s in subjects], rotation=90, fontsize=7)
        ax.set_yticks(range(len(approaches)), approaches)
        ax.set_title(f"{title}: repaired − original (> 0 worse)")
        fig.colorbar(image, ax=ax, shrink=0.8)
    fig.tight_layout()
    return to_svg(fig)


def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points of (accuracy ↑, side effect ↓), by accuracy."""
    keep = []
    for i, (acc, side) in enumerate(points):
        dominated = np.any((points[:, 0] >= acc) & (points[:, 1] <= side)
                           & ((points[:, 0] > acc) | (points[:, 1] < side)))
        if not dominated:
            keep.append(i)
    return np.array(sorted(keep, key=lambda i: points[i, 0]), dtype=int)


def plot_pareto(df: pd.DataFrame, approaches: Sequence[str], subjects: Sequence[str]) -> str | None:
    """Accuracy after repair vs NFR, one point per scored job, one panel per subject, the
    subject's Pareto front (highest accuracy for the least NFR) drawn as a step line."""
    scored = _scored(df).dropna(subset=["acc_after", "nfr"]) if _has(df, "acc_after") else pd.DataFrame()
    if scored.empty:
        return None
    plt = pyplot()
    colours = palette(approaches)
    shown = [s for s in subjects if (scored["subject"] == s).any()]
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 3.0 * nrows), squeeze=False)
    for ax, subject in zip(axes.flat, shown, strict=False):  # the grid may have spare panels
        sub = scored[scored["subject"] == subject]
        for approach in approaches:
            pts = sub[sub["approach"] == approach]
            if len(pts):
                ax.scatter(pts["nfr"], pts["acc_after"], s=18, color=colours[approach], label=approach, alpha=0.85)
        points = sub[["acc_after", "nfr"]].to_numpy(dtype=float)
        front = points[pareto_front(points)]
        ax.step(front[:, 1], front[:, 0], where="post", color="black", lw=0.8, ls="--", label="Pareto front")
        before = sub["acc_before"].dropna()
        if len(before):
            ax.axhline(before.iloc[0], color="grey", lw=0.8, ls=":", label="original accuracy")
        ax.set_title(subject, fontsize=8)
        ax.set_xlabel("NFR % (side effect)")
        ax.set_ylabel("accuracy after %")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(6, len(labels)), fontsize=7, bbox_to_anchor=(0.5, 1.06))
    fig.tight_layout()
    return to_svg(fig)


def plot_time(df: pd.DataFrame, approaches: Sequence[str], subjects: Sequence[str]) -> str | None:
    """Repair wall time per job on a log axis, one row per approach, colour by subject."""
    done = df[(df["state"] == "done")].dropna(subset=["repair_seconds"]) if "repair_seconds" in df else pd.DataFrame()
    if done.empty:
        return None
    # A log axis has no 0: instant outcomes (noop, UNADAPTABLE) sit on a 1 ms floor.
    done = done.assign(repair_seconds=done["repair_seconds"].clip(lower=TIME_FLOOR_SECONDS))
    plt = pyplot()
    colours = palette(subjects)
    fig, ax = plt.subplots(figsize=(7.0, 0.45 * len(approaches) + 1.6))
    rng = np.random.default_rng(0)  # vertical jitter only, so overlapping runs stay visible
    for i, approach in enumerate(approaches):
        for subject in subjects:
            t = done[(done["approach"] == approach) & (done["subject"] == subject)]["repair_seconds"]
            if len(t):
                ax.scatter(t, i + rng.uniform(-0.15, 0.15, len(t)), s=16, color=colours[subject],
                           label=subject if i == 0 or subject not in ax.get_legend_handles_labels()[1] else None)
        med = done[done["approach"] == approach]["repair_seconds"]
        if len(med):
            ax.plot([med.median()] * 2, [i - 0.3, i + 0.3], color="black", lw=1.2)
    ax.set_xscale("log")
    ax.set_yticks(range(len(approaches)), approaches)
    ax.set_xlabel("repair wall time, seconds (log scale, floor 1 ms; black bar: median)")
    ax.grid(axis="x", which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.25), ncol=3)
    fig.tight_layout()
    return to_svg(fig)


def plot_status_counts(df: pd.DataFrame) -> str:
    """Stacked horizontal bars: jobs per outcome for each approach."""
    counts = status_counts(df).drop(columns="total")
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.0, 0.4 * len(counts) + 1.5))
    left = np.zeros(len(counts))
    for status in counts.columns:
        ax.barh(range(len(counts)), counts[status], left=left, color=_STATUS_COLOURS.get(status, "#aaaaaa"),
                label=status)
        left += counts[status].to_numpy()
    ax.set_yticks(range(len(counts)), counts.index)
    ax.set_xlabel("jobs")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=4)
    fig.tight_layout()
    return to_svg(fig)


# --- the page -------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;margin-top:2em}
table{border-collapse:collapse;margin:0.8em 0;font-size:0.85em}caption{text-align:left;font-weight:bold;padding:4px 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th:first-child,thead th{text-align:left;background:#f4f4f4}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px}.plot svg{max-width:100%;height:auto}"""


def build_html(frame: pd.DataFrame, study: str, faults: Mapping[str, Mapping[str, Any]] | None = None,
               robustness_sets: Mapping[str, Mapping[str, Any]] | None = None, log_dir: Path | None = None) -> str:
    """The whole report as one HTML string (see module doc); job logs are linked from `log_dir`."""
    faults = faults or {}
    df = report_frame(frame)
    esc = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>fixbench study {esc(study)}</title>",
             f"<style>{_CSS}</style></head><body><h1>fixbench study <code>{esc(study)}</code></h1>"]
    done = int((df["state"] == "done").sum())
    parts.append(f"<p>{plural(len(df), 'job')} ({done} done, {len(df) - done} pending) · "
                 f"{plural(df['approach'].nunique(), 'approach')} · {plural(df['fault_id'].nunique(), 'fault')} · "
                 f"{plural(df['seed'].nunique(), 'seed')}. Cells are means over the seeds whose run produced a model "
                 "(REPAIRED / NOT_REPAIRED); UNAD = unadaptable, CORR = corrupted output, FAIL = crash, timeout "
                 "or out of memory; letters group approaches per subject (compact letter display, Tukey HSD).</p>")
    stand_ins = sorted({f"{m.get('dataset')}" for m in faults.values() if m.get("stand_in")}
                       & set(df.get("dataset", pd.Series(dtype=str))))
    if stand_ins or (df.get("stand_in") is not None and df["stand_in"].astype(bool).any()):
        parts.append(f"<p class='note'>Subjects marked <b>{esc(STAND_IN_MARK.strip())}</b> use procedural stand-in "
                     f"datasets ({esc(', '.join(stand_ins) or 'see the subjects table')}) with the real datasets' "
                     "shapes and kinds of sensitive attribute, not the real data: their numbers show the "
                     "platform's behaviour, not the approaches' accuracy on the real benchmark.</p>")
    if df.empty:
        parts.append("<p>No jobs.</p></body></html>")
        return "".join(parts)
    subjects = subject_order(df, faults)
    approaches = approach_order(df)
    subj = subject_table(df, faults)
    if not subj.empty:
        parts.append("<h2>Subjects</h2>" + _html_table(subj))

    plots = [("RR per approach × subject (mean ± std over seeds)", plot_metric_bars(df, approaches, subjects, "rr", "RR %")),
             ("NFR per approach × subject (mean ± std over seeds)",
              plot_metric_bars(df, approaches, subjects, "nfr", "NFR %")),
             *distribution_plots(df, approaches, subjects),
             ("ΔASR / ΔAAOD heat map", plot_side_effect_heatmap(df, approaches, subjects)),
             ("Accuracy vs side effect (Pareto)", plot_pareto(df, approaches, subjects)),
             ("Repair time (log axis)", plot_time(df, approaches, subjects)),
             ("Outcomes per approach", plot_status_counts(df)),
             ("Critical difference across faults (mean RR per fault)", plot_critical_difference(df))]
    for title, svg in plots:
        if svg is not None:
            parts.append(f"<h2>{esc(title)}</h2><div class='plot'>{svg}</div>")

    tables = paper_tables(df, faults)
    if tables:
        parts.append("<h2>Tables in the papers' layout</h2>")
        for title, table in tables.items():
            parts.append(_html_table(table, title))
    parts.append(effect_sizes_html(df))
    parts.append("<h2>Job outcomes</h2>" + _html_table(status_counts(df)))
    parts.append("<h2>Jobs</h2>" + jobs_html(df, log_dir))
    if robustness_sets:
        rows = pd.DataFrame([robustness_row(df, f, s) for f, s in sorted(robustness_sets.items())]).set_index("fault")
        parts.append("<h2>Robustness inputs</h2><p>ΔASR compares like with like: per fault, every model is "
                     "attacked on the same test inputs, drawn from those that the original and every repaired "
                     "model of the study classify correctly.</p>" + _html_table(rows))
    note = pending_note(df)
    if note:
        parts.append(f"<p class='note'>{esc(note)}</p>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(frame: pd.DataFrame, out_dir: str | Path, study: str,
                 faults: Mapping[str, Mapping[str, Any]] | None = None,
                 robustness_sets: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Path]:
    """Writes report.html, tables.txt, tables.md and tables.tex into `out_dir`; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = out / "report.html"
    page.write_text(build_html(frame, study, faults, robustness_sets, log_dir=out), encoding="utf-8")
    tables = paper_tables(frame, faults) if not frame.empty else {}
    txt, md = write_tables(tables, out, header=f"study {study}: {len(frame)} jobs")
    tex = write_latex(tables, out)
    return {"report": page, "tables_txt": txt, "tables_md": md, "tables_tex": tex}


def rebuild(out_dir: str | Path, study: str | None = None) -> dict[str, Path]:
    """Rebuilds results.csv / results.parquet, the tables and report.html of the study in
    `out_dir` from its ledger.sqlite alone. `study` may be left out when the ledger holds
    one study; several studies each get a sub-folder named after them."""
    from orchestrator.ledger import Ledger
    from orchestrator.results import results_frame, write_results
    from orchestrator.study_tables import StudyTables

    out = Path(out_dir)
    path = out / "ledger.sqlite"
    if not path.exists():
        raise ReportError(f"no ledger at {path}: is {out} a study's results folder?")
    ledger = Ledger(path)
    try:
        studies = sorted({r["study"] for r in ledger.rows()})
        if study is not None and study not in studies:
            raise ReportError(f"{path} holds no study {study!r}; it holds {studies}")
        chosen = [study] if study else studies
        if not chosen:
            raise ReportError(f"{path} holds no jobs")
        written: dict[str, Path] = {}
        for name in chosen:
            target = out if len(chosen) == 1 else out / name
            frame = results_frame(ledger, name)
            csv, parquet = write_results(frame, target)
            with StudyTables(path) as tables:
                faults = tables.faults(name)
                sets = {f: s for f in faults if (s := tables.robustness_set(name, f)) is not None}
            paths = write_report(frame, target, name, faults, sets)
            written.update({f"{name}:{k}": v for k, v in {"csv": csv, "parquet": parquet, **paths}.items()})
        return written
    finally:
        ledger.close()


__all__ = ["ReportError", "build_html", "kim_table", "paper_tables", "pareto_front", "rebuild", "render_markdown",
           "report_frame", "status_counts", "write_report", "write_tables", "format_duration"]
