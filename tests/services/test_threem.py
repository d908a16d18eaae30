"""3M-DNN (services/threem): the single-layer LP against a change computed by hand, the
multi-layer split beating it, determinism, Check, and the conformance suite."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tests.services.loading import service_module

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "services" / "threem"
for path in (str(SERVICE), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

import threem_repair as tm  # noqa: E402

ThreeMDNN = service_module("threem").ThreeMDNN

from fixbench.conformance import run_service_conformance  # noqa: E402
from fixbench.onnxio import Predictor  # noqa: E402
from fixbench.sdk import plnet  # noqa: E402

MARGIN = 0.2


def _two_layer(w1: np.ndarray, w2: np.ndarray) -> onnx.ModelProto:
    """x -> Gemm(w1, transB=1) -> Relu -> MatMul(w2) + Add -> Softmax."""
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h_pre"], transB=1, name="fc1"),
        helper.make_node("Relu", ["h_pre"], ["h"], name="relu1"),
        helper.make_node("MatMul", ["h", "w2"], ["mm"], name="fc2_mm"),
        helper.make_node("Add", ["mm", "b2"], ["logits"], name="fc2_add"),
        helper.make_node("Softmax", ["logits"], ["y"], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w1.shape[1]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w2.shape[1]])],
        initializer=[
            numpy_helper.from_array(w1.astype(np.float32), "w1"),
            numpy_helper.from_array(np.zeros(w1.shape[0], np.float32), "b1"),
            numpy_helper.from_array(w2.astype(np.float32), "w2"),
            numpy_helper.from_array(np.zeros(w2.shape[1], np.float32), "b2"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture()
def tiny():
    """Hidden = relu(x); the last layer scores class 0 by hidden unit 0 only. The point
    x = (1, 0) is labelled 1 but scores (1, 0): misclassified.

    By hand, the single-layer (last layer) L∞ repair: the margin row is
    Δw[0,1] + Δb[1] − Δw[0,0] − Δb[0] >= MARGIN + 1, four unit coefficients, so the minimal
    L∞ change is (1 + MARGIN) / 4."""
    model = _two_layer(np.eye(2), np.array([[1.0, 0.0], [0.0, 0.0]]))
    x = np.array([[1.0, 0.0]], np.float32)
    return model, x, np.array([1])


def _layers(model):
    tail = plnet.dense_tail(model)
    return tail, [tm.Layer(layer.w, layer.b, layer.relu) for layer in tail.layers]


def test_single_layer_lp_matches_the_hand_computed_change(tiny):
    model, x, y = tiny
    tail, layers = _layers(model)
    res = tm.single_layer_change(layers[-1], plnet.tail_features(model, tail, x), y, MARGIN)
    assert res.status == "Optimal"
    assert res.objective == pytest.approx((1 + MARGIN) / 4, abs=1e-7)
    assert np.abs(res.delta).max() == pytest.approx((1 + MARGIN) / 4, abs=1e-7)


def test_multi_layer_change_is_no_larger_than_by_hand_and_fixes_the_point(tiny):
    model, x, y = tiny
    tail, layers = _layers(model)
    a0 = plnet.tail_features(model, tail, x)
    cfg = tm.Config(layers=2, steps=8, margin=MARGIN, step_size=0.5)
    result = tm.ThreeM(layers, a0, y, cfg, np.random.default_rng(0)).run()
    by_hand = (1 + MARGIN) / 4
    assert result.change <= by_hand + 1e-7
    # Shrinking the hidden unit that votes for the wrong class shares the change between
    # two layers (optimum (1 + MARGIN) / 6), so the split does strictly better.
    assert result.change < by_hand - 1e-3
    assert set(result.weights) == {0, 1}
    repaired = plnet.with_tail_weights(model, tail, result.weights)
    assert Predictor(repaired.SerializeToString()).predict(x).tolist() == [1]
    # The reported change is the largest weight change actually made.
    biggest = max(s for _, _, s in plnet.changed_weights(tail, result.weights))
    assert biggest == pytest.approx(result.change, abs=1e-6)


def test_search_is_deterministic_for_a_seed(tiny):
    model, x, y = tiny
    tail, layers = _layers(model)
    a0 = plnet.tail_features(model, tail, x)
    cfg = tm.Config(layers=2, steps=5, margin=MARGIN, search="random")
    runs = [tm.ThreeM(layers, a0, y, cfg, np.random.default_rng(3)).run() for _ in range(2)]
    assert runs[0].change == runs[1].change
    for i in runs[0].weights:
        np.testing.assert_array_equal(runs[0].weights[i][0], runs[1].weights[i][0])


def test_infeasible_query_is_a_no_solution_with_the_solver_status():
    # One point asked to be both classes: no change of the last layer can do it.
    model = _two_layer(np.eye(2), np.array([[1.0, 0.0], [0.0, 0.0]]))
    tail, layers = _layers(model)
    a0 = plnet.tail_features(model, tail, np.array([[1.0, 0.0], [1.0, 0.0]], np.float32))
    with pytest.raises(tm.NoSolution, match="Infeasible"):
        tm.ThreeM(layers, a0, np.array([0, 1]), tm.Config(layers=1, margin=0.1), np.random.default_rng(0)).run()


def test_check_refuses_a_network_without_a_dense_tail():
    w = np.ones((3, 1, 4, 4), np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "convtail",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 1, 1])],
        initializer=[numpy_helper.from_array(w, "w")])
    conv = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    reason = ThreeMDNN().check(SimpleNamespace(model=conv))
    assert reason and "dense layer" in reason and "Conv" in reason
    assert ThreeMDNN().check(SimpleNamespace(model=_two_layer(np.eye(2), np.eye(2)))) is None


def test_presets_fill_defaults_and_given_values_win():
    paper = ThreeMDNN.resolve_params({"preset": "paper"})
    assert paper["steps"] == 40 and paper["max_points"] == 0
    assert ThreeMDNN.resolve_params({"preset": "paper", "steps": 3})["steps"] == 3
    with pytest.raises(ValueError, match="preset"):
        ThreeMDNN.resolve_params({"preset": "fast"})


def test_service_conforms():
    report = run_service_conformance(SERVICE, params={"steps": 2})
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail
