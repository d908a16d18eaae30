"""Model change: size, L0 / L2 / L∞ over name-matched initializers, architecture changes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluator.change import model_change
from fixbench.analysis.errors import InvalidSettingError

W = np.arange(6, dtype=np.float32).reshape(3, 2)
B = np.zeros(3, dtype=np.float32)


def test_unchanged_model(gemm_model) -> None:
    m, d = model_change(gemm_model(W, B), gemm_model(W, B))
    assert m["weights_changed"] == 0.0 and m["delta_l2"] == 0.0 and m["architecture_changed"] == 0.0
    assert m["params_before"] == 9.0 and m["size_delta_bytes"] == 0.0
    assert d["tensors"] == {}


def test_weight_changes_hand_computed(gemm_model) -> None:
    w2 = W.copy()
    w2[0, 0] += 3.0
    w2[2, 1] -= 4.0
    b2 = B.copy()
    b2[1] = 0.5
    m, d = model_change(gemm_model(W, B), gemm_model(w2, b2))
    assert m["weights_changed"] == 3.0
    assert m["weights_changed_pct"] == pytest.approx(3 / 9 * 100)
    assert m["delta_l2"] == pytest.approx(math.sqrt(9 + 16 + 0.25))
    assert m["delta_linf"] == pytest.approx(4.0)
    assert m["tensors_changed"] == 2.0
    assert d["tensors"]["W"] == {"l0": 2.0, "l2": 5.0, "linf": 4.0, "size": 6.0}
    # atol hides changes at or below it.
    m, _ = model_change(gemm_model(W, B), gemm_model(w2, b2), atol=1.0)
    assert m["weights_changed"] == 2.0


def test_architecture_change_is_reported_not_differenced(gemm_model) -> None:
    wide = np.ones((4, 2), dtype=np.float32)
    m, d = model_change(gemm_model(W, B), gemm_model(wide, np.zeros(4)))
    assert m["tensors_reshaped"] == 2.0 and d["reshaped"] == ["W", "b"]
    assert m["architecture_changed"] == 1.0 and m["weights_changed"] == 0.0
    m, _ = model_change(gemm_model(W, B), gemm_model(W, B, extra_relu=True))
    assert m["architecture_changed"] == 1.0 and m["weights_changed"] == 0.0


def test_tensors_added_and_removed(trained, gemm_model) -> None:
    m, d = model_change(trained["onnx"], gemm_model(W, B))
    assert m["tensors_added"] == 2.0 and d["added"] == ["W", "b"]
    assert m["tensors_removed"] == 4.0
    assert m["size_before_bytes"] == len(trained["onnx"])


def test_bad_input(gemm_model) -> None:
    with pytest.raises(InvalidSettingError, match="atol"):
        model_change(gemm_model(W, B), gemm_model(W, B), atol=-1)
    with pytest.raises(InvalidSettingError, match="repaired"):
        model_change(gemm_model(W, B), "model.onnx")
