"""VeRe (services/vere): CROWN bounds (sound, exact on a linear sub-network), the ranking puts a
planted neuron first, the patch raises accuracy, determinism, Check, and conformance."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "services" / "vere"
for path in (str(SERVICE), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

import vere_core as vc  # noqa: E402

from fixbench.conformance import run_service_conformance  # noqa: E402

_spec = importlib.util.spec_from_file_location("vere_approach", SERVICE / "approach.py")
_module = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
VeRe, unadaptable_reason = _module.VeRe, _module.unadaptable_reason

PLANTED = 3


def _random_layers(rng, sizes, scale=1.0):
    return [vc.Layer(rng.normal(size=(a, b)) * scale, rng.normal(size=b) * 0.1, i < len(sizes) - 2)
            for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True))]


def test_crown_bound_is_sound_and_exact_on_a_linear_subnetwork():
    rng = np.random.default_rng(0)
    layers = _random_layers(rng, [6, 8, 5, 3])
    x = rng.normal(size=(5, 6))
    xl, xu = x - 0.3, x + 0.3
    spec = np.zeros((5, 1, 3))
    spec[:, 0, 0], spec[:, 0, 1] = 1.0, -1.0
    la, lb = vc.crown_margin_bound(layers, xl, xu, spec)
    low = vc._concretise_lower(la, lb, xl, xu)[:, 0]
    samples = xl[None] + (xu - xl)[None] * rng.random((4000, 5, 6))
    out = vc.forward(layers, samples.reshape(-1, 6))[-1].reshape(4000, 5, 3)
    empirical = (out[..., 0] - out[..., 1]).min(axis=0)
    assert (empirical >= low - 1e-9).all()
    assert (empirical - low).max() < 10.0  # a bound, not -inf
    # One linear layer: the bound is the exact minimum over the box.
    lin = [vc.Layer(layers[-1].w, layers[-1].b, False)]
    xl2, xu2 = rng.normal(size=(5, 5)), None
    xu2 = xl2 + 0.5
    la, lb = vc.crown_margin_bound(lin, xl2, xu2, spec)
    g = lin[0].w[:, 0] - lin[0].w[:, 1]
    exact = xl2 @ g + 0.5 * np.minimum(g, 0).sum() + (lin[0].b[0] - lin[0].b[1])
    np.testing.assert_allclose(vc._concretise_lower(la, lb, xl2, xu2)[:, 0], exact, atol=1e-12)


@pytest.fixture(scope="module")
def planted():
    """Teacher 4 -> 6 -> 5 -> 3 labels the data; the fault makes check-layer neuron 3 push the
    network towards class 0 through its outgoing weights."""
    rng = np.random.default_rng(5)
    teacher = _random_layers(rng, [4, 6, 5, 3])
    for layer in teacher[:-1]:
        layer.b[:] = np.abs(layer.b) + 0.2  # keep hidden units mostly active
    a0 = rng.normal(size=(600, 4))
    y = vc.forward(teacher, a0)[-1].argmax(axis=1)
    faulty = [vc.Layer(layer.w.copy(), layer.b.copy(), layer.relu) for layer in teacher]
    vote0 = faulty[2].w[:, 0] - faulty[2].w[:, 1:].mean(axis=1)
    faulty[1].w[PLANTED] += 2.5 * vote0 / np.abs(vote0).max()
    return faulty, a0, y


def test_ranking_puts_the_planted_neuron_first(planted):
    layers, a0, y = planted
    acts = vc.forward(layers, a0)
    wrong = np.nonzero(acts[-1].argmax(axis=1) != y)[0]
    assert len(wrong) >= 10
    h = acts[1]
    grid = vc.interval_grid(h, intervals=10, spread=0.5)
    ranking = vc.rank_neurons(layers[1:], h[wrong], y[wrong], grid)
    assert ranking.order[0] == PLANTED
    assert ranking.scores[PLANTED] > ranking.scores[ranking.order[1]]


def test_repair_patches_the_planted_neuron_and_raises_accuracy(planted):
    layers, a0, y = planted
    cfg = vc.Config(rounds=2, local_epochs=40)
    result = vc.repair(layers, a0, y, cfg, np.random.default_rng(0))
    assert result.rounds[0].neuron == PLANTED
    assert result.accuracy > result.start_accuracy
    # Only the patched neurons' in-weights (columns of the analysed layer) and out-weights
    # (rows of the next one) change; the layer after that is untouched.
    patched = {r.neuron for r in result.rounds if r.accepted}
    assert PLANTED in patched
    in_changed = np.nonzero(np.abs(result.layers[0].w - layers[0].w).sum(axis=0))[0]
    out_changed = np.nonzero(np.abs(result.layers[1].w - layers[1].w).sum(axis=1))[0]
    assert set(in_changed.tolist()) <= patched and set(out_changed.tolist()) <= patched
    np.testing.assert_array_equal(result.layers[2].w, layers[2].w)


def test_repair_is_deterministic_for_a_seed(planted):
    layers, a0, y = planted
    cfg = vc.Config(rounds=2, local_epochs=10)
    a = vc.repair(layers, a0, y, cfg, np.random.default_rng(9))
    b = vc.repair(layers, a0, y, cfg, np.random.default_rng(9))
    for la, lb in zip(a.layers, b.layers, strict=True):
        np.testing.assert_array_equal(la.w, lb.w)


def _onnx(nodes, inits, n_in, n_out):
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", n_in])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", n_out])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def test_check_needs_a_hidden_dense_relu_layer():
    one_layer = _onnx([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)],
                      [numpy_helper.from_array(np.ones((3, 4), np.float32), "w"),
                       numpy_helper.from_array(np.zeros(3, np.float32), "b")], 4, 3)
    reason = VeRe().check(SimpleNamespace(model=one_layer, params={"check_layer": 0}))
    assert reason and "no hidden dense layer" in reason
    two = _onnx([helper.make_node("Gemm", ["x", "w1", "b1"], ["z"], transB=1), helper.make_node("Relu", ["z"], ["h"]),
                 helper.make_node("Gemm", ["h", "w2", "b2"], ["y"], transB=1)],
                [numpy_helper.from_array(np.ones((5, 4), np.float32), "w1"), numpy_helper.from_array(np.zeros(5, np.float32), "b1"),
                 numpy_helper.from_array(np.ones((3, 5), np.float32), "w2"), numpy_helper.from_array(np.zeros(3, np.float32), "b2")], 4, 3)
    assert unadaptable_reason(two, 0) is None
    assert "check_layer=1" in unadaptable_reason(two, 1)
    assert isinstance(two, onnx.ModelProto)


def test_service_conforms():
    report = run_service_conformance(SERVICE, params={"rounds": 2, "local_epochs": 20})
    failures = report.failures
    assert not failures, f"{report.summary()}: {[(c.name, c.detail) for c in failures]}\n{report.log_tail}"
