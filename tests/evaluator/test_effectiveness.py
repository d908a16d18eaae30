"""Effectiveness metrics (You et al.) and the training-recipe metrics of Kim et al."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluator.effectiveness import effectiveness_metrics, per_class_accuracy, per_class_effectiveness
from fixbench.analysis.errors import (
    EmptyInputError,
    EvaluationError,
    InvalidRecipeError,
    InvalidSettingError,
    LengthMismatchError,
)
from fixbench.analysis.recipe_repair import (
    improvement_ratio,
    patch_complexity,
    patch_similarity,
    recipe_patch,
    repaired_by_significance,
)

Y = np.array([0, 0, 1, 1, 2, 2])
BEFORE = np.array([0, 1, 1, 0, 2, 0])  # right: 0, 2, 4
AFTER = np.array([0, 0, 0, 1, 2, 2])  # right: 0, 1, 3, 4, 5


def test_effectiveness_hand_computed() -> None:
    m = effectiveness_metrics(Y, BEFORE, AFTER)
    assert m["acc_before"] == pytest.approx(50.0)
    assert m["acc_after"] == pytest.approx(500 / 6)
    assert m["rr"] == pytest.approx(100.0)  # 1, 3, 5 were wrong; all fixed
    assert m["nfr"] == pytest.approx(100 / 6)  # 2 broke
    assert m["dacc"] == pytest.approx((500 / 6 - 50) / 50 * 100)


def test_effectiveness_no_originally_wrong_input() -> None:
    m = effectiveness_metrics(Y, Y, AFTER)
    assert m["rr"] == 0.0 and m["wrong_before"] == 0.0
    assert m["nfr"] == pytest.approx(100 / 6)


def test_per_class_accuracy_and_missing_class() -> None:
    assert per_class_accuracy(Y, BEFORE) == {0: 50.0, 1: 50.0, 2: 50.0}
    acc = per_class_accuracy(Y, AFTER, classes=[0, 1, 2, 7])
    assert acc[0] == 100.0 and acc[1] == 50.0 and acc[2] == 100.0
    assert math.isnan(acc[7])  # no input of class 7: undefined, not 0
    table = per_class_effectiveness(Y, BEFORE, AFTER)
    assert table[2] == {"support": 2.0, "acc_before": 50.0, "acc_after": 100.0, "delta": 50.0}


def test_single_class() -> None:
    y = np.zeros(4, dtype=int)
    assert per_class_accuracy(y, np.array([0, 0, 1, 0])) == {0: 75.0}


def test_length_mismatch_is_evaluation_error() -> None:
    with pytest.raises(LengthMismatchError, match="5 labels"):
        effectiveness_metrics(np.zeros(5), np.zeros(5), np.zeros(4))
    with pytest.raises(EvaluationError):
        per_class_accuracy(np.zeros(3), np.zeros(2))
    with pytest.raises(EmptyInputError):
        effectiveness_metrics(np.array([]), np.array([]), np.array([]))


def test_significance_unpaired_clear_improvement() -> None:
    faulty = [0.50, 0.52, 0.51, 0.49, 0.48]
    repaired = [0.80, 0.82, 0.81, 0.79, 0.83]
    r = repaired_by_significance(faulty, repaired)
    assert r.repaired and r.test == "mann-whitney-u"
    # Exact one-sided U test, complete separation of 5 vs 5: p = 1 / C(10, 5).
    assert r.p_value == pytest.approx(1 / 252)
    assert r.statistic == 25.0


def test_significance_requires_higher_mean_and_small_p() -> None:
    same = [0.5, 0.6, 0.7]
    assert not repaired_by_significance(same, same).repaired
    # Worse repaired runs: p large.
    assert not repaired_by_significance([0.8, 0.81, 0.82, 0.83], [0.5, 0.51, 0.52, 0.53]).repaired
    # 2 vs 2 can never reach p < 0.05 (smallest exact p = 1/6).
    r = repaired_by_significance([0.1, 0.2], [0.9, 0.95])
    assert not r.repaired and r.p_value == pytest.approx(1 / 6)


def test_significance_paired_wilcoxon() -> None:
    faulty = [0.50, 0.55, 0.60, 0.52, 0.58, 0.61]
    repaired = [0.60, 0.66, 0.69, 0.65, 0.70, 0.75]
    r = repaired_by_significance(faulty, repaired, paired=True)
    # All 6 differences positive: exact one-sided p = 1 / 2^6.
    assert r.test == "wilcoxon" and r.p_value == pytest.approx(1 / 64) and r.repaired
    tie = repaired_by_significance(faulty, faulty, paired=True)
    assert tie.p_value == 1.0 and not tie.repaired
    with pytest.raises(LengthMismatchError):
        repaired_by_significance([0.1, 0.2], [0.3], paired=True)
    with pytest.raises(InvalidSettingError):
        repaired_by_significance([0.1], [0.2], alpha=0)
    with pytest.raises(EmptyInputError):
        repaired_by_significance([], [0.2])


def test_improvement_ratio() -> None:
    assert improvement_ratio(0.8, 0.6, 0.9) == pytest.approx(2 / 3)
    assert improvement_ratio([0.7, 0.9], [0.6, 0.6], 0.9) == pytest.approx(2 / 3)
    assert improvement_ratio(0.5, 0.6, 0.9) == pytest.approx(-1 / 3)
    assert improvement_ratio(0.95, 0.6, 0.9) > 1
    # The ground-truth fix does not improve on the fault: no scale, IR undefined.
    assert math.isnan(improvement_ratio(0.8, 0.6, 0.6))
    assert math.isnan(improvement_ratio(0.8, 0.6, 0.5))


def test_patch_complexity_and_patch() -> None:
    faulty = {"optimizer": "sgd", "lr": 0.1, "epochs": 10, "loss": "mse", "batch_size": 32}
    repaired = {"optimizer": "adam", "lr": 0.1000000000001, "epochs": 12, "loss": "mse", "dropout": 0.2}
    # optimizer, epochs changed; dropout added; batch_size removed; lr equal up to float noise.
    assert recipe_patch(faulty, repaired) == {
        "batch_size": "<removed>",
        "dropout": 0.2,
        "epochs": 12,
        "optimizer": "adam",
    }
    assert patch_complexity(faulty, repaired) == 4
    assert patch_complexity(faulty, dict(faulty)) == 0
    with pytest.raises(InvalidRecipeError, match="faulty_recipe"):
        patch_complexity(["lr"], repaired)


def test_patch_similarity_asymmetric_jaccard() -> None:
    truth = {"lr": 0.01, "optimizer": "adam"}
    tool = {"lr": 0.003, "optimizer": "adam", "epochs": 30, "batch_size": 64}
    # Field level: both ground-truth fields touched; extras not penalised → 2/2.
    assert patch_similarity(tool, truth) == 1.0
    # Value level: only optimizer=adam matches → 1/2.
    assert patch_similarity(tool, truth, match="value") == 0.5
    # Asymmetric: swapping the roles changes the value (2 of the tool's 4 fields).
    assert patch_similarity(truth, tool) == 0.5
    assert patch_similarity({"epochs": 3}, truth) == 0.0
    assert patch_similarity(["lr"], ["lr", "loss"]) == 0.5
    assert math.isnan(patch_similarity(tool, {}))
    with pytest.raises(InvalidSettingError):
        patch_similarity(tool, truth, match="fuzzy")
    with pytest.raises(InvalidRecipeError):
        patch_similarity("lr", truth)
