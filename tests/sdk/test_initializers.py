"""fixbench.sdk.initializers: a torch module's edited weights go back into the ONNX graph
they came from, and nothing else of the graph changes."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from fixbench.onnxio import Predictor
from fixbench.onnxio.torch_bridge import onnx_to_torch, torch_to_onnx_bytes
from fixbench.sdk.initializers import initializer_names, write_initializers

torch = pytest.importorskip("torch")


def dense_classifier() -> onnx.ModelProto:
    """A two-layer MLP exported by torch, as the benchmark's models are."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3)).eval()
    return onnx.load_from_string(torch_to_onnx_bytes(net, torch.zeros(1, 4)))


def test_an_edited_weight_lands_in_its_initialiser_and_the_rest_is_byte_identical():
    model = dense_classifier()
    module = onnx_to_torch(model)
    tensors = dict(module.named_parameters())
    names = initializer_names(model, tensors)
    assert names and set(names.values()) <= {i.name for i in model.graph.initializer}
    name = next(iter(names))
    with torch.no_grad():
        tensors[name].add_(1.0)
    repaired = write_initializers(model, {name: tensors[name]}, names)
    before = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    after = {i.name: numpy_helper.to_array(i) for i in repaired.graph.initializer}
    changed = [n for n in before if not np.array_equal(before[n], after[n])]
    assert changed == [names[name]]
    np.testing.assert_allclose(after[names[name]], before[names[name]] + 1.0)
    assert [n.SerializeToString() for n in repaired.graph.node] == [n.SerializeToString() for n in model.graph.node]
    # the written model computes what the edited module computes
    x = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(Predictor(repaired.SerializeToString()).scores(x), expected, rtol=1e-5, atol=1e-5)


def test_a_tensor_without_an_initialiser_asks_for_a_re_export():
    model = dense_classifier()
    stray = torch.zeros(3, 3)
    assert initializer_names(model, {"stray": stray}) == {}
    assert write_initializers(model, {"stray": stray}, {}) is None
    onnx.checker.check_model(model)
