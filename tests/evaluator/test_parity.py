"""The parity gate: passes for a faithful torch re-import, fails on a graph altered on the
onnxruntime side only (a changed initializer, an extra op) and on bad outputs."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from evaluator.parity import ParityThresholds, check_parity, compare_scores, import_to_torch
from fixbench.analysis.errors import InvalidSettingError, LengthMismatchError
from fixbench.onnxio import Predictor, load_model


@pytest.fixture(scope="module")
def reimport(trained):
    module, reason = import_to_torch(load_model(trained["onnx"]))
    assert module is not None, reason
    return module


def test_faithful_reimport_passes(trained, reimport) -> None:
    x = trained["x_test"][:200]
    report = check_parity(reimport, Predictor(trained["onnx"]).scores(x), x)
    assert report.passed and report.reason == ""
    assert report.argmax_agreement == 1.0 and report.max_abs_diff < 1e-4 and report.n == 200


def _altered_initializer(model_bytes: bytes) -> bytes:
    model = onnx.load_from_string(model_bytes)
    init = model.graph.initializer[-1]  # the last layer's bias
    arr = numpy_helper.to_array(init).copy()
    arr[0] += 5.0
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    return model.SerializeToString()


def _extra_op(model_bytes: bytes) -> bytes:
    model = onnx.load_from_string(model_bytes)
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = ["pre_scale" if o == out else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(1.01, dtype=np.float32), "scale"))
    model.graph.node.append(helper.make_node("Mul", ["pre_scale", "scale"], [out]))
    return model.SerializeToString()


def test_changed_initializer_on_onnxruntime_side_fails(trained, reimport) -> None:
    x = trained["x_test"][:200]
    altered = Predictor(_altered_initializer(trained["onnx"])).scores(x)
    report = check_parity(reimport, altered, x)
    assert not report.passed
    assert report.max_abs_diff == pytest.approx(5.0, rel=1e-4)
    assert "max |Δ output|" in report.reason


def test_added_op_on_onnxruntime_side_fails(trained, reimport) -> None:
    x = trained["x_test"][:200]
    scaled = Predictor(_extra_op(trained["onnx"])).scores(x)
    report = check_parity(reimport, scaled, x)
    # Scaling keeps every argmax, but the outputs differ: the gate still fails.
    assert not report.passed and report.argmax_agreement == 1.0 and report.max_abs_diff > 1e-3


def test_thresholds_are_configurable() -> None:
    ref = np.array([[1.0, 0.0], [0.0, 1.0]])
    cand = ref + 0.01
    assert not compare_scores(ref, cand).passed
    assert compare_scores(ref, cand, ParityThresholds(max_abs_diff=0.02)).passed
    flipped = np.array([[1.0, 0.0], [1.0, 0.0]])
    report = compare_scores(ref, flipped, ParityThresholds(min_agreement=0.4, max_abs_diff=10))
    assert report.passed and report.argmax_agreement == 0.5
    assert not compare_scores(ref, flipped, ParityThresholds(max_abs_diff=10)).passed


def test_bad_outputs_fail_with_reason() -> None:
    ref = np.array([[1.0, 0.0]])
    assert "NaN or Inf" in compare_scores(ref, np.array([[np.nan, 0.0]])).reason
    assert "shapes differ" in compare_scores(ref, np.array([[1.0, 0.0, 0.0]])).reason


def test_module_that_raises_fails_the_gate() -> None:
    def broken(_x):
        raise RuntimeError("op not implemented")

    report = check_parity(broken, np.zeros((2, 2)), np.zeros((2, 3), dtype=np.float32))
    assert not report.passed and "op not implemented" in report.reason and math.isnan(report.max_abs_diff)


def test_bad_settings_and_lengths() -> None:
    with pytest.raises(InvalidSettingError, match="min_agreement"):
        ParityThresholds(min_agreement=1.5)
    with pytest.raises(InvalidSettingError, match="max_abs_diff"):
        ParityThresholds(max_abs_diff=-1)
    with pytest.raises(LengthMismatchError):
        compare_scores(np.zeros((3, 2)), np.zeros((2, 2)))
