"""Statistical killing: the Mann-Whitney test plus effect size decide which mutants stay."""

from __future__ import annotations

import math

import pytest

from fixbench.faults.killing import cohens_d, kill_test, min_repeats, vargha_delaney_a12
from fixbench.faults.scales import NAMED_SCALES, parse_scale, repeats_for_scale


def test_clearly_worse_mutant_is_killed_with_p_value_and_effect_size():
    test = kill_test([80.0, 82.0, 81.0, 83.0], [60.0, 65.0, 62.0, 61.0])
    assert test.killed
    assert test.p_value == pytest.approx(1 / 70)  # exact one-sided, complete separation, n = 4
    assert test.a12 == 1.0 and test.cohens_d > 5
    assert test.original_mean == pytest.approx(81.5) and test.mutant_mean == pytest.approx(62.0)


def test_three_repeats_can_never_kill_at_alpha_005():
    assert min_repeats(0.05) == 4
    test = kill_test([80.0, 81.0, 82.0], [10.0, 11.0, 12.0])
    assert test.p_value == pytest.approx(0.05) and not test.killed


@pytest.mark.parametrize(
    ("original", "mutant"),
    [
        ([80.0, 81.0, 82.0, 83.0], [80.5, 81.5, 82.5, 79.5]),  # overlapping: no significance
        ([80.0, 81.0, 82.0, 83.0], [90.0, 91.0, 92.0, 93.0]),  # the mutant is *better*
        ([10.0, 10.0, 10.0, 10.0], [10.0, 10.0, 10.0, 10.0]),  # identical constant runs
    ],
)
def test_mutants_that_are_not_significantly_worse_survive(original, mutant):
    assert not kill_test(original, mutant).killed


def test_effect_size_threshold_is_enforced():
    # Significant (p < 0.05) with Cohen's d ≈ 1.63: killed at a medium threshold, kept at 2.
    original = [80.0, 81.0, 82.0, 83.0, 84.0, 85.0, 86.0, 87.0]
    mutant = [76.0, 77.0, 78.0, 79.0, 80.0, 81.0, 82.0, 83.0]
    medium = kill_test(original, mutant, min_effect=0.5)
    strict = kill_test(original, mutant, min_effect=2.0)
    assert medium.p_value == strict.p_value < 0.05
    assert medium.cohens_d == pytest.approx(1.633, abs=1e-3)
    assert medium.killed and not strict.killed


def test_effect_sizes():
    assert vargha_delaney_a12([3, 4], [1, 2]) == 1.0
    assert vargha_delaney_a12([1, 2], [1, 2]) == 0.5
    assert cohens_d([1.0, 1.0], [1.0, 1.0]) == 0.0
    assert math.isinf(cohens_d([2.0, 2.0], [1.0, 1.0]))
    assert cohens_d([1.0, 3.0], [0.0, 2.0]) == pytest.approx(1 / math.sqrt(2))
    # JSON has no infinity: the record carries None and A12 = 1.
    assert kill_test([80.0] * 4, [10.0] * 4).to_dict()["cohens_d"] is None


def test_bad_samples_are_refused():
    with pytest.raises(ValueError, match="at least 2 accuracies"):
        kill_test([80.0], [10.0, 11.0])
    with pytest.raises(ValueError, match="finite"):
        kill_test([80.0, float("nan")], [10.0, 11.0])


def test_scales_and_repeats():
    assert parse_scale("small") == NAMED_SCALES["small"] == 0.2
    assert parse_scale("0.35") == 0.35 and parse_scale(2) == 2.0
    for bad in ("huge", "-1", "0", True, "nan", None):
        with pytest.raises(ValueError, match="scale"):
            parse_scale(bad)  # type: ignore[arg-type]
    assert repeats_for_scale(0.2) == 4
    assert repeats_for_scale(0.5) == 6
    assert repeats_for_scale(1.0) == 10
