"""fixbench.results, the public API researchers load studies with: typed frames from one or
several results folders, summaries, pairwise statistics with A12, letter groups, LaTeX."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from fixbench import results


def study_frame(study: str, shift: float = 0.0) -> pd.DataFrame:
    rows = []
    for approach, level, rr in (("noop", "baseline", [0.0, 0.0, 0.0]), ("finetune", "baseline", [40.0, 42.0, 44.0]),
                                ("apricot", "model", [70.0, 72.0, 75.0])):
        for seed, value in enumerate(rr):
            rows.append({"study": study, "approach": approach, "level": level, "fault_id": "mnist-lenet5",
                         "subject": "MNIST", "seed": seed, "state": "done", "status": "REPAIRED" if value else "NOT_REPAIRED",
                         "rr": value + shift, "nfr": 0.1 * seed, "dacc": 0.5, "repair_seconds": 1.0 + seed,
                         "m_dasr": 0.0, "attempts": 1})
    rows.append({"study": study, "approach": "ra", "level": "layer", "fault_id": "mnist-lenet5", "subject": "MNIST",
                 "seed": 0, "state": "done", "status": "UNADAPTABLE", "rr": None, "attempts": 1})
    return pd.DataFrame(rows)


@pytest.fixture
def two_studies(tmp_path):
    for name, shift in (("one", 0.0), ("two", 5.0)):
        (tmp_path / name).mkdir()
        study_frame(name, shift).to_parquet(tmp_path / name / "results.parquet")
    return tmp_path


def test_load_types_the_columns_and_joins_studies(two_studies):
    df = results.load(two_studies / "one", two_studies / "two" / "results.parquet")
    assert len(df) == 20 and results.studies(df) == ["one", "two"]
    assert df["approach"].dtype == "category" and df["status"].dtype == "category"
    assert str(df["seed"].dtype) == "Int64" and df["rr"].dtype == float and df["m_dasr"].dtype == float
    # a folder holding several studies' folders loads them all
    assert len(results.load(two_studies)) == 20


def test_load_refuses_what_is_not_a_results_folder(tmp_path):
    with pytest.raises(results.ResultsError, match="holds no results.parquet"):
        results.load(tmp_path)
    with pytest.raises(results.ResultsError, match="does not exist"):
        results.load(tmp_path / "nope")


def test_summary_pairwise_and_letters(two_studies):
    df = results.load(two_studies / "one")
    summary = results.summary(df)
    row = summary.loc[("one", "apricot", "MNIST")]
    assert row["runs"] == 3 and row["scored"] == 3 and row["rr_mean"] == pytest.approx(217 / 3)
    assert summary.loc[("one", "ra", "MNIST")]["outcomes"] == "UNADAPTABLE 1"
    pairs = results.pairwise(df, "rr").set_index(["a", "b"])
    apricot_vs_noop = pairs.loc[("apricot", "noop")]
    assert apricot_vs_noop["a12"] == 1.0 and apricot_vs_noop["magnitude"] == "large"
    assert 0 < apricot_vs_noop["p_value"] <= apricot_vs_noop["p_holm"] <= 1
    # NFR: lower is better, so A12 counts the lower value as the win
    nfr = results.pairwise(df, "nfr").set_index(["a", "b"])
    assert nfr.loc[("apricot", "finetune")]["a12"] == 0.5
    letters = results.letter_groups(df, "rr")
    assert letters.loc["apricot", "MNIST"] == "a" and letters.loc["noop", "MNIST"] != "a"


def test_leaderboard_compares_studies(two_studies):
    board = results.leaderboard(results.load(two_studies), "rr")
    assert list(board.columns) == ["one", "two"] and board.index[0] == "apricot"
    assert board.loc["apricot", "two"] - board.loc["apricot", "one"] == pytest.approx(5.0)


def test_latex_tables_have_letters_legend_and_compile(two_studies, tmp_path):
    tex = results.latex_tables(results.load(two_studies / "one"))
    assert tex.count("\\begin{table}") >= 3 and "\\label{tab:fixbench-rr}" in tex
    assert "UNAD" in tex and "compact letter display" in tex and " a" in tex
    assert "\\begin{tabular}{l|" in tex and "$\\pm$" not in tex.split("\\caption")[0]
    doc = tmp_path / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\begin{document}\n" + tex + "\\end{document}\n")
    engine = shutil.which("pdflatex")
    if engine is None:
        # no LaTeX engine here: the structure is checked above and the environments balance
        assert tex.count("\\begin{table}") == tex.count("\\end{table}")
        return
    proc = subprocess.run([engine, "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 1000


def test_pairwise_of_identical_constant_samples_is_not_significant():
    df = results.typed(pd.DataFrame({"study": "s", "approach": ["x", "x", "y", "y"], "subject": "S", "seed": [0, 1, 0, 1],
                                     "state": "done", "status": "NOT_REPAIRED", "rr": np.zeros(4)}))
    assert results.pairwise(df, "rr")["p_value"].tolist() == [1.0]
