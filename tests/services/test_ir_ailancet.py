"""IR (AI-Lancet): the located error-inducing neuron is the one corrupted on purpose, neuron
fine-tuning raises the repair accuracy while touching only that neuron, runs repeat for a
seed, Check refuses a model without hidden neurons, and the service conforms."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "services" / "ir-ailancet"
for path in (str(SERVICE), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

import lancet as core  # noqa: E402

from fixbench.arrays import load_split  # noqa: E402
from fixbench.conformance.fixture import CLASSES, FEATURES, build_fixture  # noqa: E402

torch = pytest.importorskip("torch")


def _approach():
    """The service's approach.py under its own module name (every service has one)."""
    name = "ir_ailancet_approach"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SERVICE / "approach.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def _fixture():
    from fixbench.onnxio.torch_bridge import onnx_to_torch

    fx = build_fixture(0)
    module = onnx_to_torch(onnx.load_from_string(fx.model))
    splits = {name: load_split(blob)[:2] for name, blob in fx.splits.items()}
    return module, splits


def _repair_acc(module, x, y):
    with torch.no_grad():
        return float((module(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def _locate(module, x, y):
    layers = core.hidden_layers(module, x, CLASSES)
    with torch.no_grad():
        failing = module(torch.from_numpy(x)).argmax(1).numpy() != y
    return layers, core.locate(core.error_scores(module, layers, x[failing], y[failing], True), 1), failing


def test_localisation_finds_the_corrupted_neuron():
    module, splits = _fixture()
    x, y = splits["repair"]
    layers, neurons, failing = _locate(module, x, y)
    assert failing.any() and layers == ["fc1"]
    # The fixture corrupts the weight from hidden unit F-1 (relu of the noise feature) to class 0.
    assert neurons[0].layer == "fc1" and neurons[0].index == FEATURES - 1 and neurons[0].score == 1.0


def _nll(out, target):
    return torch.nn.functional.nll_loss(torch.log(out.clamp_min(1e-7)), target)


def _finetune(seed):
    module, splits = _fixture()
    (x, y), (vx, vy) = splits["repair"], splits["valid"]
    _, neurons, _ = _locate(module, x, y)
    before_w = module.fc1.weight.detach().clone()
    before_acc = _repair_acc(module, x, y)
    result = core.neuron_finetune(module, neurons, x, y, vx, vy, _nll,
                                  epochs=15, learning_rate=0.05, batch_size=32, patience=15,
                                  rng=np.random.default_rng(seed), should_stop=lambda: False, report=lambda e, a: None)
    return module, before_w, before_acc, _repair_acc(module, x, y), result


def test_neuron_finetuning_fixes_inputs_touching_only_the_located_neuron_and_repeats():
    module, before_w, before_acc, after_acc, (v0, v1, epoch) = _finetune(seed=1)
    assert after_acc > before_acc and v1 > v0 and epoch > 0
    changed = (module.fc1.weight.detach() != before_w).any(dim=1).numpy()
    assert changed.tolist() == [i == FEATURES - 1 for i in range(2 * FEATURES)]
    again = _finetune(seed=1)[0]
    assert torch.equal(module.fc1.weight, again.fc1.weight)


def test_check_refuses_a_model_without_hidden_neurons():
    approach = _approach()
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1, name="only")], "onelayer",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(np.ones((3, 4), np.float32), "w"),
                     numpy_helper.from_array(np.zeros(3, np.float32), "b")])

    class Ctx:
        model = helper.make_model(graph)

    reason = approach.AILancet().check(Ctx())
    assert reason and "no hidden" in reason
    with pytest.raises(Exception, match="preset"):
        approach.AILancet.resolve_params({"preset": "nope"})


def test_service_conforms_and_repairs_the_fixture():
    from fixbench.conformance import run_service_conformance

    report = run_service_conformance(SERVICE, params={"epochs": 10, "learning_rate": 0.05, "patience": 10})
    assert not report.failures, [(c.name, c.detail) for c in report.failures]
    assert "then REPAIRED" in report.by_name()["fix-stream"].detail
