"""Integrity: signature change, NaN/Inf outputs, accuracy collapse → CORRUPTED_OUTPUT."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.integrity import CORRUPTED_OUTPUT, OK, IntegrityThresholds, check_integrity
from fixbench.analysis.errors import InvalidSettingError
from fixbench.onnxio import load_model

W = np.ones((3, 2), dtype=np.float32)
B = np.zeros(3, dtype=np.float32)


@pytest.fixture
def original(gemm_model):
    return load_model(gemm_model(W, B))


def test_healthy_model_is_ok(original, gemm_model) -> None:
    v = check_integrity(original, load_model(gemm_model(W * 2, B)), np.ones((4, 3)), 80.0, 79.0)
    assert v.ok and v.status == OK and v.reason == ""


def test_signature_change(original, gemm_model) -> None:
    more_classes = load_model(gemm_model(np.ones((4, 2)), np.zeros(4)))
    v = check_integrity(original, more_classes, None, None, None)
    assert v.status == CORRUPTED_OUTPUT and "output signature changed" in v.reason
    other_input = load_model(gemm_model(np.ones((3, 5)), B))
    assert "input signature changed" in check_integrity(original, other_input, None, None, None).reason


def test_non_finite_outputs(original, gemm_model) -> None:
    scores = np.ones((5, 3))
    scores[1, 2] = np.nan
    scores[3, 0] = np.inf
    v = check_integrity(original, original, scores, 80.0, 80.0)
    assert v.status == CORRUPTED_OUTPUT and "2 of 5" in v.reason


def test_accuracy_collapse_relative_and_absolute(original, gemm_model) -> None:
    assert check_integrity(original, original, None, 90.0, 44.0).status == CORRUPTED_OUTPUT
    assert check_integrity(original, original, None, 90.0, 46.0).ok
    strict = IntegrityThresholds(relative_floor=0.0, absolute_floor=60.0)
    v = check_integrity(original, original, None, 90.0, 59.0, strict)
    assert v.status == CORRUPTED_OUTPUT and "floor 60.00%" in v.reason


def test_bad_thresholds() -> None:
    with pytest.raises(InvalidSettingError, match="relative_floor"):
        IntegrityThresholds(relative_floor=1.5)
    with pytest.raises(InvalidSettingError, match="absolute_floor"):
        IntegrityThresholds(absolute_floor=-1)
