"""CARE: causal localisation finds a hidden neuron corrupted on purpose, the particle swarm
improves its own cost on the repair inputs, runs are deterministic, Check refuses models
without a hidden dense layer, and the real service passes the conformance suite."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from fixbench.conformance import run_service_conformance
from fixbench.onnxio import Predictor

SERVICES = Path(__file__).resolve().parents[2] / "services"
sys.path.insert(0, str(SERVICES / "care"))
from care_repair import CareConfig, repair, unadaptable_reason  # noqa: E402

F, C = 4, 3


def _net(planted: int, corruption: float = 4.0) -> onnx.ModelProto:
    """x -> relu([x, -x]) -> [V; -V] + softmax: a perfect blob classifier, until the weight from
    hidden unit `planted` to class 0 is raised (inputs where that unit fires go to class 0)."""
    v = np.eye(F, C, dtype=np.float32)
    w1 = np.concatenate([np.eye(F), -np.eye(F)]).astype(np.float32)
    w2 = np.concatenate([v, -v]).astype(np.float32)
    w2[planted, 0] += corruption
    nodes = [
        helper.make_node("Gemm", ["input", "w1", "b1"], ["h_pre"], transB=1),
        helper.make_node("Relu", ["h_pre"], ["h"]),
        helper.make_node("MatMul", ["h", "w2"], ["mm"]),
        helper.make_node("Add", ["mm", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["output"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes, "planted", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", F])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", C])],
        initializer=[numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(np.zeros(2 * F, np.float32), "b1"),
                     numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(np.zeros(C, np.float32), "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _blobs(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    x = rng.normal(0, 1, (n, F)).astype(np.float32)
    x[np.arange(n), y] += 3.0
    return x, y.astype(np.int64)


FAST = dict(iterations=30)


@pytest.mark.parametrize("planted", [3, 5])
def test_causal_analysis_ranks_the_planted_neuron_first(planted):
    x, y = _blobs()
    result = repair(_net(planted), x, y, CareConfig(**FAST), seed=0)
    assert result.ranking[0][0] == planted, result.ranking[:3]
    assert result.chosen[0] == planted


def test_the_swarm_improves_its_cost_and_the_model_fixes_repair_inputs():
    x, y = _blobs()
    model = _net(3)
    before = Predictor(model.SerializeToString(), threads=1).predict(x) != y
    result = repair(model, x, y, CareConfig(**FAST), seed=0)
    m = result.metrics
    assert m["cost_after"] < m["cost_before"] and m["fixed"] > 0
    after = Predictor(result.model, threads=1).predict(x) != y
    # The folded factors reproduce the search's count exactly on the fixed failing inputs.
    assert int((before & ~after).sum()) == int(m["fixed"])
    assert after.sum() < before.sum()


def test_same_seed_same_repair():
    x, y = _blobs()
    a = repair(_net(3), x, y, CareConfig(**FAST), seed=7)
    b = repair(_net(3), x, y, CareConfig(**FAST), seed=7)
    assert np.array_equal(a.factors, b.factors) and a.model == b.model


def test_no_hidden_dense_layer_is_unadaptable():
    w = numpy_helper.from_array(np.ones((F, C), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["output"])], "linear",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", F])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", C])], initializer=[w])
    reason = unadaptable_reason(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), 1)
    assert reason and "no dense" in reason
    assert "only 1" in unadaptable_reason(_net(3), 2)
    assert unadaptable_reason(_net(3), 1) is None


def test_care_conforms():
    report = run_service_conformance(SERVICES / "care", params={"iterations": 20})
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail
