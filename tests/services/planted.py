"""Tiny ONNX classifiers with a hidden neuron corrupted on purpose, for the neuron-level
approaches' localisation tests (CARE, INNER, NeuRecover)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F, C = 4, 3


def planted_net(planted: int, corruption: float = 4.0, w2: np.ndarray | None = None) -> onnx.ModelProto:
    """x -> relu([x, -x]) -> [V; -V] + softmax: a perfect blob classifier, until the weight from
    hidden unit `planted` to class 0 is raised (inputs where that unit fires go to class 0).
    `w2` replaces the last layer's (in, out) weight when given."""
    v = np.eye(F, C, dtype=np.float32)
    w1 = np.concatenate([np.eye(F), -np.eye(F)]).astype(np.float32)
    if w2 is None:
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
                     numpy_helper.from_array(np.asarray(w2, np.float32), "w2"),
                     numpy_helper.from_array(np.zeros(C, np.float32), "b2")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def linear_net() -> onnx.ModelProto:
    """A single MatMul reading the input: no hidden layer at all."""
    w = numpy_helper.from_array(np.ones((F, C), np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["input", "w"], ["output"])], "linear",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", F])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["n", C])], initializer=[w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def blobs(n: int = 300, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, C, n)
    x = rng.normal(0, 1, (n, F)).astype(np.float32)
    x[np.arange(n), y] += 3.0
    return x, y.astype(np.int64)
