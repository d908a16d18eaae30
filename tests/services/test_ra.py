"""RA / PRDNN (services/ra): provable repair on a tiny ReLU net with a planted fault (every
repair point correct, every held point kept; last layer and a decoupled hidden layer),
determinism, Check on non-sequential and non-piecewise-linear graphs, and conformance."""

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
SERVICE = ROOT / "services" / "ra"
for path in (str(SERVICE), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

import prdnn_repair as pr  # noqa: E402

from fixbench.conformance import run_service_conformance  # noqa: E402
from fixbench.onnxio import Predictor  # noqa: E402
from fixbench.sdk import plnet  # noqa: E402

_module = service_module("ra")
ProvableRepair, unadaptable_reason = _module.ProvableRepair, _module.unadaptable_reason


def _mlp(ws: list[np.ndarray], bs: list[np.ndarray]) -> onnx.ModelProto:
    """x -> (Gemm transB=1 -> Relu)* -> Gemm -> Softmax, weights given (in, out)."""
    nodes, inits, cur = [], [], "x"
    for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
        inits += [numpy_helper.from_array(w.T.astype(np.float32), f"fc{i}.weight"),
                  numpy_helper.from_array(b.astype(np.float32), f"fc{i}.bias")]
        nodes.append(helper.make_node("Gemm", [cur, f"fc{i}.weight", f"fc{i}.bias"], [f"z{i}"], transB=1, name=f"fc{i}"))
        cur = f"z{i}"
        if i < len(ws) - 1:
            nodes.append(helper.make_node("Relu", [cur], [f"h{i}"], name=f"relu{i}"))
            cur = f"h{i}"
    nodes.append(helper.make_node("Softmax", [cur], ["y"], axis=-1, name="softmax"))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", ws[0].shape[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", ws[-1].shape[1]])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def planted():
    """A 4 -> 8 -> 3 ReLU teacher labels the data; the fault adds 3.0 to one hidden-layer
    weight, so some inputs flip class."""
    rng = np.random.default_rng(11)
    ws = [rng.normal(size=(4, 8)), rng.normal(size=(8, 3))]
    bs = [np.zeros(8), np.zeros(3)]
    x = rng.normal(size=(400, 4)).astype(np.float32)
    teacher = _mlp(ws, bs)
    y = Predictor(teacher.SerializeToString()).predict(x)
    faulty_ws = [ws[0].copy(), ws[1].copy()]
    faulty_ws[0][1, 2] += 3.0
    faulty = _mlp(faulty_ws, bs)
    pred = Predictor(faulty.SerializeToString()).predict(x)
    failing = np.nonzero(pred != y)[0][:12]
    held = np.nonzero(pred == y)[0][:40]
    assert len(failing) >= 5
    return faulty, x, y, failing, held


@pytest.mark.parametrize("layer", [-1, 0])
def test_repair_fixes_every_repair_point_and_keeps_every_held_point(planted, layer):
    model, x, y, failing, held = planted
    tail = plnet.dense_tail(model)
    k = pr.resolve_layer(tail, layer)
    pts = np.concatenate([failing, held])
    prob = pr.build_problem(tail, k, plnet.tail_features(model, tail, x[pts]), y[pts])
    res, dw, db = pr.solve(prob, margin=0.01, norm="linf", time_limit=30)
    assert res.status == "Optimal" and res.objective > 0
    repaired = pr.decoupled_model(model, tail, k, tail.layers[k].w + dw, tail.layers[k].b + db)
    pred = Predictor(repaired.SerializeToString()).predict(x)
    assert (pred[failing] == y[failing]).all()
    assert (pred[held] == y[held]).all()
    # The exported decoupled network computes what the LP assumed.
    logits = pr.decoupled_logits(tail, k, plnet.tail_features(model, tail, x), tail.layers[k].w + dw, tail.layers[k].b + db)
    np.testing.assert_array_equal(logits.argmax(axis=1), pred)
    if layer == 0:  # a hidden layer: the value channel gates by the original activation pattern
        assert any(n.op_type == "Greater" for n in repaired.graph.node)


def test_l1_change_is_sparser_than_linf(planted):
    model, x, y, failing, held = planted
    tail = plnet.dense_tail(model)
    pts = np.concatenate([failing, held])
    prob = pr.build_problem(tail, 1, plnet.tail_features(model, tail, x[pts]), y[pts])
    _, dw1, _ = pr.solve(prob, 0.01, "l1", 30)
    _, dwi, _ = pr.solve(prob, 0.01, "linf", 30)
    assert (np.abs(dw1) > 1e-9).sum() < (np.abs(dwi) > 1e-9).sum()


def test_contradictory_points_are_infeasible_not_a_crash(planted):
    model, x, _, _, _ = planted
    tail = plnet.dense_tail(model)
    xs = np.concatenate([x[:1], x[:1]])
    prob = pr.build_problem(tail, 1, plnet.tail_features(model, tail, xs), np.array([0, 1]))
    res, dw, _ = pr.solve(prob, 0.01, "linf", 30)
    assert dw is None and "Infeasible" in res.status


def test_solution_is_deterministic(planted):
    model, x, y, failing, held = planted
    tail = plnet.dense_tail(model)
    pts = np.concatenate([failing, held])
    prob = pr.build_problem(tail, 0, plnet.tail_features(model, tail, x[pts]), y[pts])
    a, b = pr.solve(prob, 0.01, "linf", 30), pr.solve(prob, 0.01, "linf", 30)
    np.testing.assert_array_equal(a[1], b[1])


def _graph(nodes, inits, in_shape, out_shape):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _dense_inits():
    return [numpy_helper.from_array(np.eye(4, dtype=np.float32), "w1"), numpy_helper.from_array(np.zeros(4, np.float32), "b1"),
            numpy_helper.from_array(np.ones((3, 4), np.float32), "w2"), numpy_helper.from_array(np.zeros(3, np.float32), "b2")]


def test_check_refuses_residual_concat_and_non_piecewise_linear_networks():
    residual = _graph([
        helper.make_node("Gemm", ["x", "w1", "b1"], ["z"], transB=1),
        helper.make_node("Relu", ["z"], ["h"]),
        helper.make_node("Add", ["h", "x"], ["r"]),
        helper.make_node("Gemm", ["r", "w2", "b2"], ["y"], transB=1)], _dense_inits(), ["N", 4], ["N", 3])
    assert "residual" in unadaptable_reason(residual, -1)
    concat = _graph([
        helper.make_node("Gemm", ["x", "w1", "b1"], ["z"], transB=1),
        helper.make_node("Relu", ["z"], ["h"]),
        helper.make_node("Concat", ["h", "x"], ["c"], axis=1),
        helper.make_node("Gemm", ["c", "w2", "b2"], ["y"], transB=1)],
        _dense_inits()[:2] + [numpy_helper.from_array(np.ones((3, 8), np.float32), "w2"),
                              numpy_helper.from_array(np.zeros(3, np.float32), "b2")], ["N", 4], ["N", 3])
    assert "concatenates" in unadaptable_reason(concat, -1)
    sigmoid = _graph([
        helper.make_node("Gemm", ["x", "w1", "b1"], ["z"], transB=1),
        helper.make_node("Sigmoid", ["z"], ["h"]),
        helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1)], _dense_inits(), ["N", 4], ["N", 3])
    assert "not piecewise linear" in unadaptable_reason(sigmoid, -1)
    plain = _graph([
        helper.make_node("Gemm", ["x", "w1", "b1"], ["z"], transB=1),
        helper.make_node("Relu", ["z"], ["h"]),
        helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1)], _dense_inits(), ["N", 4], ["N", 3])
    assert unadaptable_reason(plain, -1) is None
    assert "out of range" in unadaptable_reason(plain, -3)
    approach = ProvableRepair()
    assert approach.check(SimpleNamespace(model=residual, params={"layer": -1})).startswith("provable repair needs")


def test_service_conforms():
    report = run_service_conformance(SERVICE, params={"max_points": 40, "keep": 40})
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail
