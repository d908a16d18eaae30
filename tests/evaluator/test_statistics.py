"""Statistics across seeds: summaries, tests, A12, Holm, compact-letter display."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fixbench.analysis.errors import EmptyInputError, EvaluationError, InvalidSettingError, LengthMismatchError
from fixbench.analysis.statistics import (
    a12_magnitude,
    compact_letter_display,
    holm_adjust,
    mann_whitney_u,
    pairwise_p_values,
    summarize,
    vargha_delaney_a12,
    wilcoxon_signed_rank,
)


def test_summarize_mean_std_count() -> None:
    df = pd.DataFrame(
        {
            "approach": ["AP", "AP", "AP", "ET", "ET"],
            "subject": ["mnist"] * 5,
            "seed": [0, 1, 2, 0, 1],
            "rr": [70.0, 74.0, 78.0, 60.0, np.nan],
        }
    )
    s = summarize(df, ["rr"])
    assert s.loc[("AP", "mnist"), ("rr", "mean")] == pytest.approx(74.0)
    assert s.loc[("AP", "mnist"), ("rr", "std")] == pytest.approx(4.0)
    assert s.loc[("ET", "mnist"), ("rr", "n")] == 1
    assert math.isnan(s.loc[("ET", "mnist"), ("rr", "std")])
    # Default metric list: every numeric column except keys and seed.
    assert list(summarize(df).columns.get_level_values(0).unique()) == ["rr"]
    with pytest.raises(EvaluationError, match="subject"):
        summarize(df.drop(columns="subject"))
    with pytest.raises(EvaluationError, match="nfr"):
        summarize(df, ["nfr"])


def test_vargha_delaney_a12() -> None:
    assert vargha_delaney_a12([3, 4, 5], [1, 2, 2]) == 1.0
    assert vargha_delaney_a12([1, 2], [1, 2]) == 0.5
    # Pairs: (1,1) tie, (1,3) less, (4,1) greater, (4,3) greater → (2 + 0.5) / 4.
    assert vargha_delaney_a12([1, 4], [1, 3]) == pytest.approx(0.625)
    assert [a12_magnitude(v) for v in (0.5, 0.6, 0.3, 0.9)] == ["negligible", "small", "medium", "large"]
    with pytest.raises(EmptyInputError):
        vargha_delaney_a12([], [1])


def test_wilcoxon_and_mann_whitney() -> None:
    r = wilcoxon_signed_rank([2, 3, 4, 5, 6], [1, 1, 1, 1, 1], alternative="greater")
    assert r.p_value == pytest.approx(1 / 32)
    assert wilcoxon_signed_rank([1, 2], [1, 2]).p_value == 1.0
    assert mann_whitney_u([4, 5, 6], [1, 2, 3]).p_value == pytest.approx(0.1)
    assert mann_whitney_u([4, 5, 6], [1, 2, 3], alternative="greater").statistic == 9.0
    with pytest.raises(LengthMismatchError):
        wilcoxon_signed_rank([1, 2], [1])
    with pytest.raises(InvalidSettingError, match="alternative"):
        mann_whitney_u([1], [2], alternative="bigger")


def test_holm_adjust() -> None:
    assert holm_adjust([0.01, 0.04, 0.03]).tolist() == pytest.approx([0.03, 0.06, 0.06])
    assert holm_adjust([0.5, 0.9]).tolist() == pytest.approx([1.0, 1.0])


def test_cld_separates_clear_groups() -> None:
    samples = {
        "AP": [74.0, 73.5, 74.4],
        "ET": [73.6, 73.9, 73.4],
        "HUDD": [50.8, 51.0, 50.5],
        "3M": [0.0, 0.1, 0.0],
    }
    letters = compact_letter_display(samples)
    assert letters["AP"] == letters["ET"] == "a"
    assert letters["HUDD"] == "b" and letters["3M"] == "c"
    # Lower is better flips the order of the letters.
    assert compact_letter_display(samples, higher_is_better=False)["3M"] == "a"


def test_cld_overlapping_groups_share_letters() -> None:
    # A vs C differ, B overlaps both: A "a", B "ab", C "b".
    samples = {"A": [10.0, 10.5, 11.0, 10.2], "B": [9.4, 10.0, 10.1, 9.5], "C": [8.4, 9.5, 9.0, 8.9]}
    p = pairwise_p_values(samples, "tukey")
    assert p[("A", "C")] < 0.05 and p[("A", "B")] >= 0.05 and p[("B", "C")] >= 0.05
    assert compact_letter_display(samples) == {"A": "a", "B": "ab", "C": "b"}


def test_cld_constant_samples_and_other_tests() -> None:
    const = {"x": [1.0, 1.0], "y": [1.0, 1.0], "z": [2.0, 2.0]}
    assert compact_letter_display(const) == {"x": "b", "y": "b", "z": "a"}
    # With 3 runs Mann-Whitney cannot reach p < 0.05: everything shares one letter.
    three = {"a": [1, 2, 3], "b": [10, 11, 12]}
    assert compact_letter_display(three, test="mann-whitney") == {"a": "a", "b": "a"}
    assert compact_letter_display(three, test="welch", adjust="holm") == {"a": "b", "b": "a"}
    with pytest.raises(InvalidSettingError, match="test"):
        compact_letter_display(three, test="anova")
    with pytest.raises(InvalidSettingError, match="adjust"):
        compact_letter_display(three, adjust="bonferroni")
    with pytest.raises(InvalidSettingError, match="replicated"):
        compact_letter_display({"a": [1.0], "b": [2.0]})
    assert compact_letter_display({"only": [1.0]}) == {"only": "a"}


def test_tukey_with_a_treatment_of_one_run() -> None:
    # A study cell where one approach kept a single valid run (the others CORRUPTED): scipy's
    # Tukey HSD refuses a group of one, so that treatment is never separated (p = 1) and the
    # replicated ones are still compared among themselves.
    samples = {"A": [10.0, 10.5, 11.0], "B": [1.0, 1.2, 0.9], "single": [5.0]}
    p = pairwise_p_values(samples, "tukey")
    assert p[("A", "single")] == 1.0 and p[("B", "single")] == 1.0
    assert p[("A", "B")] < 0.05
    letters = compact_letter_display(samples)
    assert letters["A"] != letters["B"]
    assert set(letters["single"]) >= set(letters["A"]) | set(letters["B"])
    # Replicated treatments without spread keep the exact rule beside the single one.
    const = pairwise_p_values({"x": [1.0, 1.0], "y": [2.0, 2.0], "one": [3.0]}, "tukey")
    assert const == {("x", "y"): 0.0, ("x", "one"): 1.0, ("y", "one"): 1.0}
