"""fixbench.sdk.plnet: the dense tail of exported graphs (Identity-shared biases, Dropout
no-ops), patched weights that leave shared constants alone, and the plain-chain rule."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from fixbench.sdk import plnet


def _model(nodes, inits, n_in, n_out):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _shared_bias_net():
    """Two Gemm layers whose zero biases are Identity copies of one initializer (as torch's
    exporter writes equal constants), a Dropout between them, and a final Softmax."""
    rng = np.random.default_rng(0)
    w1 = rng.normal(size=(4, 4)).astype(np.float32)
    w2 = rng.normal(size=(3, 4)).astype(np.float32)
    nodes = [
        helper.make_node("Identity", ["zeros"], ["b1"]),
        helper.make_node("Gemm", ["x", "w1", "b1"], ["z1"], transB=1),
        helper.make_node("Relu", ["z1"], ["h1"]),
        helper.make_node("Dropout", ["h1"], ["d1"]),
        helper.make_node("Identity", ["zeros3"], ["b2"]),
        helper.make_node("Gemm", ["d1", "w2", "b2"], ["z2"], transB=1),
        helper.make_node("Softmax", ["z2"], ["y"], axis=-1),
    ]
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"),
             numpy_helper.from_array(np.zeros(4, np.float32), "zeros"),
             numpy_helper.from_array(np.zeros(3, np.float32), "zeros3")]
    return _model(nodes, inits, 4, 3)


def _run(model, x):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_dense_tail_follows_identity_biases_and_dropout():
    model = _shared_bias_net()
    tail = plnet.dense_tail(model)
    assert [layer.weight for layer in tail.layers] == ["w1", "w2"]
    assert [layer.relu for layer in tail.layers] == [True, False]
    assert tail.layers[0].bias == "zeros" and tail.final_op.op_type == "Softmax"
    x = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    feats = plnet.tail_features(model, tail, x)
    np.testing.assert_allclose(feats, x, atol=1e-6)


def test_patched_weights_are_what_onnxruntime_computes_and_shared_constants_stay():
    model = _shared_bias_net()
    tail = plnet.dense_tail(model)
    w = tail.layers[1].w + 0.5
    b = np.array([1.0, -1.0, 0.5])
    patched = plnet.with_tail_weights(model, tail, {1: (w, b)})
    x = np.random.default_rng(2).normal(size=(6, 4)).astype(np.float32)
    logits = tail.logits_of(x.astype(np.float64), {1: (w, b)})
    expected = np.exp(logits - logits.max(axis=1, keepdims=True))
    np.testing.assert_allclose(_run(patched, x), expected / expected.sum(axis=1, keepdims=True), atol=1e-5)
    inits = {t.name: numpy_helper.to_array(t) for t in patched.graph.initializer}
    # The bias was read through an Identity: it gets a new initializer, the old one is untouched.
    assert not inits["zeros3"].any() and "zeros3.repaired" in inits
    changes = plnet.changed_weights(tail, {1: (w, b)})
    assert changes[0][2] == pytest.approx(1.0) and {c[0] for c in changes} == {"w2", "zeros3"}


def test_sequential_rule_ignores_shape_computations():
    w = numpy_helper.from_array(np.ones((3, 4), np.float32), "w")
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Reshape", ["x", "s"], ["r"]),
        helper.make_node("Gemm", ["r", "w"], ["y"], transB=1),
    ]
    assert plnet.sequential_problem(_model(nodes, [w], 4, 3)) is None
    branch = [
        helper.make_node("Relu", ["x"], ["a"]),
        helper.make_node("Neg", ["x"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["c"]),
        helper.make_node("Gemm", ["c", "w"], ["y"], transB=1),
    ]
    assert "residual" in plnet.sequential_problem(_model(branch, [w], 4, 3))


def test_margins():
    logits = np.array([[1.0, 3.0, 2.0], [0.0, -1.0, 5.0]])
    np.testing.assert_allclose(plnet.margins(logits, np.array([1, 0])), [1.0, -5.0])
