"""A cross-study leaderboard page: when several studies share a results folder
(results/quick, results/you2026@0.1, …), leaderboard.html beside them compares the approaches
across the studies (the mean over subjects of each study's per-subject means, as the papers
average their cells) and links each study's report."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd

from fixbench import results
from fixbench.results import RESULT_FILE, ResultsError

METRICS = (("rr", "RR % (higher is better)"), ("nfr", "NFR % (lower is better)"), ("dacc", "⇑ACC % (higher is better)"))


def studies_in(folder: Path) -> list[Path]:
    return sorted(p.parent for p in folder.glob(f"*/{RESULT_FILE}"))


def write_leaderboard(folder: str | Path) -> Path | None:
    """leaderboard.html in `folder` when it holds at least two studies' results; else None."""
    folder = Path(folder)
    found = studies_in(folder)
    if len(found) < 2:
        return None
    try:
        df = results.load(*found)
    except ResultsError:
        return None
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>fixbench leaderboard</title>",
             "<style>body{font-family:'DejaVu Sans',sans-serif;margin:2em auto;max-width:1200px}"
             "table{border-collapse:collapse;margin:0.8em 0;font-size:0.85em}th,td{border:1px solid #ccc;"
             "padding:3px 8px;text-align:right}th:first-child{text-align:left}</style></head><body>",
             f"<h1>fixbench leaderboard: {len(found)} studies</h1><p>Per study, the mean over its subjects of the "
             "per-subject mean over scored runs; – where an approach did not run in a study. Each study's own "
             "report has the significance tests and letter groups.</p><ul>"]
    for path in found:
        parts.append(f"<li><a href='{esc(path.name)}/report.html'>{esc(path.name)}</a></li>")
    parts.append("</ul>")
    for metric, title in METRICS:
        if metric not in df.columns:
            continue
        board = results.leaderboard(df, metric)
        if board.empty:
            continue
        board = board.map(lambda v: "–" if pd.isna(v) else f"{v:.2f}")
        head = "".join(f"<th>{esc(str(c))}</th>" for c in ["approach", *board.columns])
        body = "".join("<tr><th>" + esc(str(i)) + "</th>" + "".join(f"<td>{esc(str(v))}</td>" for v in row) + "</tr>"
                       for i, row in zip(board.index, board.itertuples(index=False), strict=True))
        parts.append(f"<h2>{esc(title)}</h2><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
    parts.append("</body></html>")
    page = folder / "leaderboard.html"
    page.write_text("\n".join(parts), encoding="utf-8")
    return page
