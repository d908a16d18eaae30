"""Backward compatibility (Srivastava et al. 2020) on hand-computed predictions."""

from __future__ import annotations

import numpy as np
import pytest

from evaluator.compatibility import backward_compatibility
from fixbench.analysis.errors import EmptyInputError, LengthMismatchError

Y = np.array([0, 1, 2, 0, 1, 2, 0, 1])
BEFORE = np.array([0, 1, 2, 0, 0, 0, 1, 1])  # right: 0,1,2,3,7 (5); wrong: 4,5,6
AFTER = np.array([0, 1, 0, 1, 1, 0, 2, 1])  # right: 0,1,4,7 (4); wrong: 2,3,5,6


def test_hand_computed_values() -> None:
    m = backward_compatibility(Y, BEFORE, AFTER)
    # right before and wrong after: inputs 2, 3 → NFR = 2/8.
    assert m["nfr"] == pytest.approx(25.0)
    # right before and after: 0, 1, 7 → BTC = 3/5.
    assert m["btc"] == pytest.approx(60.0)
    # wrong after and wrong before: 5, 6 → BEC = 2/4.
    assert m["bec"] == pytest.approx(50.0)
    assert (m["right_before"], m["wrong_after"], m["negative_flips"]) == (5.0, 4.0, 2.0)


def test_identical_models_are_fully_compatible() -> None:
    m = backward_compatibility(Y, BEFORE, BEFORE)
    assert (m["nfr"], m["btc"], m["bec"]) == (0.0, 100.0, 100.0)


def test_vacuous_cases() -> None:
    y = np.array([1, 1, 1])
    # Nothing was right before: no trust to break; the new model is perfect: no new error.
    m = backward_compatibility(y, np.array([0, 0, 0]), y)
    assert m["btc"] == 100.0 and m["bec"] == 100.0 and m["right_before"] == 0.0 and m["wrong_after"] == 0.0
    # No originally wrong input, and every one breaks.
    m = backward_compatibility(y, y, np.array([0, 0, 0]))
    assert (m["nfr"], m["btc"], m["bec"]) == (100.0, 0.0, 0.0)


def test_bad_input() -> None:
    with pytest.raises(LengthMismatchError, match="pred_after=2"):
        backward_compatibility(Y[:3], BEFORE[:3], AFTER[:2])
    with pytest.raises(EmptyInputError):
        backward_compatibility(np.array([]), np.array([]), np.array([]))
