"""Fairness metrics on crafted predictions, cross-checked against fairlearn for two classes."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fairlearn.metrics import demographic_parity_difference, equalized_odds_difference

from evaluator.fairness import fairness_change, fairness_metrics, group_rates
from fixbench.analysis.errors import FairnessUndefinedError, LengthMismatchError, MissingSensitiveAttributeError

# Group 0: inputs 0-3, group 1: inputs 4-7.
Y = np.array([1, 1, 0, 0, 1, 1, 0, 0])
PRED = np.array([1, 1, 1, 0, 1, 0, 0, 0])
G = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def test_binary_hand_computed() -> None:
    m, details = fairness_metrics(Y, PRED, G)
    # Class 1: TPR g0 = 2/2, g1 = 1/2; FPR g0 = 1/2, g1 = 0/2.
    # Class 0: TPR g0 = 1/2, g1 = 2/2; FPR g0 = 0/2, g1 = 1/2.
    # AAOD = ½ (mean(|0.5|, |0.5|) + mean(|0.5|, |0.5|)) = 0.5.
    assert m["aaod"] == pytest.approx(0.5)
    # Selection rate of class 1: g0 3/4, g1 1/4 → 0.5.
    assert m["dpd"] == pytest.approx(0.5)
    assert m["eod"] == pytest.approx(0.5)
    # Accuracy g0 3/4, g1 3/4.
    assert m["accuracy_gap"] == 0.0
    assert details["groups"][0]["tpr"][1] == 1.0 and details["groups"][1]["fpr"][0] == 0.5


def test_two_classes_match_fairlearn() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 200)
    pred = np.where(rng.random(200) < 0.8, y, 1 - y)
    group = rng.integers(0, 2, 200)
    pred[group == 1] = np.where(rng.random((group == 1).sum()) < 0.3, 1, pred[group == 1])
    m, _ = fairness_metrics(y, pred, group)
    assert m["dpd"] == pytest.approx(demographic_parity_difference(y, pred, sensitive_features=group))
    assert m["eod"] == pytest.approx(equalized_odds_difference(y, pred, sensitive_features=group))
    # The usual binary AAOD: ½ (|ΔTPR| + |ΔFPR|) for the positive class.
    r = group_rates(y, pred, group)
    expected = 0.5 * (abs(r[0]["tpr"][1] - r[1]["tpr"][1]) + abs(r[0]["fpr"][1] - r[1]["fpr"][1]))
    assert m["aaod"] == pytest.approx(expected)


def test_group_without_positives_of_a_class_is_skipped_for_that_class() -> None:
    y = np.array([0, 1, 2, 0, 1, 1])
    pred = np.array([0, 1, 2, 0, 0, 1])
    g = np.array([0, 0, 0, 1, 1, 1])  # group 1 has no input of class 2
    m, d = fairness_metrics(y, pred, g)
    assert math.isnan(d["groups"][1]["tpr"][2])
    # TPR: class 0 1 vs 1 → 0; class 1 1 vs 1/2 → 0.5; class 2 skipped → mean 0.25.
    # FPR: class 0 0/2 vs 1/2 → 0.5; class 1 0/2 vs 0/1 → 0; class 2 0/2 vs 0/3 → 0 → mean 1/6.
    assert m["aaod"] == pytest.approx(0.5 * (0.25 + 1 / 6))


def test_single_class() -> None:
    y = np.zeros(6, dtype=int)
    pred = np.array([0, 0, 0, 0, 0, 0])
    m, _ = fairness_metrics(y, pred, np.array([0, 0, 0, 1, 1, 1]))
    assert m["aaod"] == 0.0 and m["dpd"] == 0.0
    pred = np.array([0, 0, 0, 0, 0, 1])
    m, _ = fairness_metrics(y, pred, np.array([0, 0, 0, 1, 1, 1]))
    # Class 0: TPR 1 vs 2/3 (FPR undefined); class 1: FPR 0 vs 1/3 (TPR undefined).
    assert m["aaod"] == pytest.approx(0.5 * (1 / 3 + 1 / 3))


def test_multi_group_is_max_over_pairs() -> None:
    y = np.array([1, 0, 1, 0, 1, 0])
    pred = np.array([1, 0, 1, 0, 0, 1])
    g = np.array([0, 0, 1, 1, 2, 2])
    m, d = fairness_metrics(y, pred, g)
    assert d["aaod_pairs"]["0-1"] == 0.0
    assert d["aaod_pairs"]["0-2"] == pytest.approx(1.0)
    assert m["aaod"] == pytest.approx(1.0)
    assert m["groups"] == 3.0


def test_change_between_models() -> None:
    m, _ = fairness_change(Y, PRED, Y, G)
    assert m["aaod_before"] == pytest.approx(0.5) and m["aaod_after"] == 0.0
    assert m["daaod"] == pytest.approx(-0.5)


def test_bad_input() -> None:
    with pytest.raises(MissingSensitiveAttributeError, match="group"):
        fairness_metrics(Y, PRED, None)
    with pytest.raises(FairnessUndefinedError, match="single value"):
        fairness_metrics(Y, PRED, np.zeros(8))
    with pytest.raises(LengthMismatchError, match="group=7"):
        fairness_metrics(Y, PRED, G[:7])
