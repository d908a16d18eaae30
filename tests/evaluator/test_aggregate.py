"""Paper-layout tables from a tidy results frame and their plain-text rendering."""

from __future__ import annotations

import pandas as pd
import pytest

from fixbench.analysis.aggregate import (
    category_means,
    format_duration,
    metric_table,
    paper_tables,
    render_text,
    time_table,
)
from fixbench.analysis.errors import EvaluationError


def _results() -> pd.DataFrame:
    rows = []
    for seed, (ap, et) in enumerate([(73.0, 70.0), (74.0, 71.0), (75.0, 72.0)]):
        rows.append(("AP", "mnist", seed, "REPAIRED", ap, 1.0, 49_560.0))
        rows.append(("ET", "mnist", seed, "REPAIR_STATUS_REPAIRED", et, 2.0, 280_800.0))
        rows.append(("RA", "mnist", seed, "REPAIRED", 6.0 + seed, 0.5, 13.0))
        rows.append(("RA", "utkface", seed, "UNADAPTABLE", None, None, None))
        rows.append(("AP", "utkface", seed, "CORRUPTED_OUTPUT" if seed else "TOOL_ERROR", None, None, None))
    return pd.DataFrame(rows, columns=["approach", "subject", "seed", "status", "rr", "nfr", "repair_seconds"])


def test_metric_table_cells_and_statuses() -> None:
    t = metric_table(_results(), "rr", approaches=["ET", "AP", "RA"])
    assert list(t.index) == ["ET", "AP", "RA"] and list(t.columns) == ["mnist", "utkface"]
    assert t.loc["AP", "mnist"] == "74.00" and t.loc["ET", "mnist"] == "71.00"
    assert t.loc["RA", "utkface"] == "UNAD"
    assert t.loc["AP", "utkface"] == "CORR"  # 2 corrupted runs beat 1 tool error
    assert t.loc["ET", "utkface"] == "–"  # never ran
    t = metric_table(_results(), "rr", with_std=True, decimals=1)
    assert t.loc["AP", "mnist"] == "74.0 ± 1.0"


def test_metric_table_letters() -> None:
    t = metric_table(_results(), "rr", letters=True)
    assert t.loc["AP", "mnist"] == "74.00 a" and t.loc["ET", "mnist"] == "71.00 b"
    assert t.loc["RA", "mnist"] == "7.00 c" and t.loc["RA", "utkface"] == "UNAD"


def test_time_format_and_table() -> None:
    assert [format_duration(s) for s in (13, 75, 255, 5640, 49_560, 486_000)] == [
        "13s",
        "1m15s",
        "4m15s",
        "1h34m",
        "13h46m",
        "135h",
    ]
    t = time_table(_results())
    assert t.loc["AP", "mnist"] == "13h46m" and t.loc["ET", "mnist"] == "78h00m"


def test_paper_tables_and_category_means() -> None:
    tables = paper_tables(_results())
    assert set(tables) == {"RR", "NFR", "time"}
    means = category_means(_results(), "rr", {"AP": "model", "ET": "model", "RA": "layer"})
    assert means["model"] == pytest.approx((74.0 + 71.0) / 2) and means["layer"] == pytest.approx(7.0)
    with pytest.raises(EvaluationError, match="RA"):
        category_means(_results(), "rr", {"AP": "model", "ET": "model"})


def test_render_text() -> None:
    df = _results()
    t = metric_table(df[df["approach"] != "ET"], "rr", approaches=["AP", "RA"])
    text = render_text(t, title="RR (%)")
    assert text == (
        "RR (%)\n"
        "approach  mnist  utkface\n"
        "--------  -----  -------\n"
        "AP        74.00     CORR\n"
        "RA         7.00     UNAD\n"
    )


def test_bad_frames() -> None:
    with pytest.raises(EvaluationError, match="seed"):
        metric_table(_results().drop(columns="seed"), "rr")
    with pytest.raises(EvaluationError, match="dasr"):
        metric_table(_results(), "dasr")
