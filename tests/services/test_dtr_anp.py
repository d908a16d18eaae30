"""DTR (ANP): the mask optimisation turns off the BatchNorm neuron corrupted on purpose and the
pruned model fixes repair inputs, runs repeat for a seed, Check answers UNADAPTABLE with its
reason on the zoo's LeNet-5 and face CNN but not on the VGG / ResNet / DenseNet CNNs, and the
service conforms (the conformance fixture has no BatchNorm: UNADAPTABLE through Check)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "services" / "dtr-anp"
for path in (str(SERVICE), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)

import anp as core  # noqa: E402

from fixbench.arrays import load_split  # noqa: E402
from fixbench.conformance.fixture import CLASSES, FEATURES, build_fixture  # noqa: E402

torch = pytest.importorskip("torch")


def _approach():
    """The service's approach.py under its own module name (every service has one)."""
    name = "dtr_anp_approach"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, SERVICE / "approach.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
BAD = FEATURES - 1  # the BatchNorm channel whose output the corrupted head weight misuses


def _bn_fault():
    """x (N, F, 1, 1) -> 1x1 Conv [I; -I] -> BatchNorm (identity) -> ReLU -> Linear [V; -V],
    with 2.5 added from hidden channel F-1 (the noise feature) to class 0: a BatchNorm
    neuron whose every contribution is an error."""
    from fixbench.onnxio.torch_bridge import onnx_to_torch, torch_to_onnx_bytes

    net = torch.nn.Sequential(torch.nn.Conv2d(FEATURES, 2 * FEATURES, 1, bias=False), torch.nn.BatchNorm2d(2 * FEATURES),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(2 * FEATURES, CLASSES))
    v = np.eye(FEATURES, CLASSES, dtype=np.float32)
    head = np.concatenate([v, -v])
    head[BAD, 0] += 2.5
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(np.concatenate([np.eye(FEATURES), -np.eye(FEATURES)]).astype(np.float32)
                                             .reshape(2 * FEATURES, FEATURES, 1, 1)))
        net[1].running_mean.zero_()
        net[1].running_var.fill_(1.0)
        net[1].weight.fill_(1.0)
        net[1].bias.fill_(0.0)
        net[4].weight.copy_(torch.from_numpy(head.T.copy()))
        net[4].bias.zero_()
    model = onnx.load_from_string(torch_to_onnx_bytes(net.eval(), torch.zeros(1, FEATURES, 1, 1)))
    fx = build_fixture(0)
    x, y = load_split(fx.splits["repair"])[:2]
    return model, onnx_to_torch(model), x.reshape(-1, FEATURES, 1, 1).astype(np.float32), y.astype(np.int64)


def _acc(model, x, y):
    from fixbench.onnxio import Predictor

    return float((Predictor(model.SerializeToString()).predict(x) == y).mean())


def _run(seed):
    model, module, x, y = _bn_fault()
    core.prepare_channels(module, x)
    loss = torch.nn.CrossEntropyLoss()
    masks = core.optimise_masks(module, x, y, loss, iterations=150, batch_size=32, eps=0.4, steps=1, alpha=0.2,
                                learning_rate=0.2, rng=np.random.default_rng(seed), should_stop=lambda: False,
                                report=lambda i, v: None)
    names = [n.name for n in core.bn_nodes(model)]
    return model, x, y, masks, core.select_pruned(masks, names, threshold=0.2, max_pruned=0.9)


def test_anp_prunes_the_corrupted_batchnorm_neuron_and_fixes_inputs():
    model, x, y, masks, pruned = _run(seed=0)
    assert len(masks) == 1 and int(np.argmin(masks[0])) == BAD
    assert [n.index for n in pruned] == [BAD]
    repaired = core.write_pruned(model, pruned)
    assert _acc(repaired, x, y) > _acc(model, x, y)
    # Only that neuron's scale changed: the original initialisers are untouched.
    assert [i.name for i in model.graph.initializer] == [i.name for i in repaired.graph.initializer][:len(model.graph.initializer)]


def test_mask_optimisation_repeats_for_a_seed():
    np.testing.assert_array_equal(_run(seed=4)[3][0], _run(seed=4)[3][0])


@pytest.mark.parametrize("arch, adaptable", [("lenet5", False), ("facenet", False), ("vgg16", True),
                                             ("resnet18", True), ("densenet121", True)])
def test_check_matches_the_studys_unadaptable_pattern_on_the_zoo(arch, adaptable):
    approach = _approach()
    from fixbench.onnxio.torch_bridge import torch_to_onnx_bytes
    from fixbench.zoo.architectures import build_model
    from fixbench.zoo.recipe import Recipe

    shape = (1, 28, 28) if arch == "lenet5" else (3, 16, 16)  # BatchNorm count does not depend on size
    net = build_model(Recipe(architecture=arch, width_multiplier=0.125), shape, 10)
    model = onnx.load_from_string(torch_to_onnx_bytes(net, torch.zeros((1, *shape))))
    reason = approach.unadaptable_reason(model, approach.ANP.resolve_params({})["min_bn_layers"])
    if adaptable:
        assert reason is None
    else:
        assert reason and "BatchNorm" in reason


def test_service_conforms_and_refuses_the_fixture_through_check():
    from fixbench.conformance import run_service_conformance

    report = run_service_conformance(SERVICE, params={"iterations": 5})
    assert not report.failures, [(c.name, c.detail) for c in report.failures]
    assert "no BatchNormalization" in report.by_name()["check-valid"].detail


class _Ctx:
    """The parts of RepairContext that ANP's repair uses, over an in-memory fault."""

    def __init__(self, model, splits, params, seed=0):
        from fixbench.onnxio import Predictor
        from fixbench.sdk import Split

        self.model, self.model_bytes = model, model.SerializeToString()
        self._splits = {k: Split(x, y, None) for k, (x, y) in splits.items()}
        self.params, self.seed, self.rng = params, seed, np.random.default_rng(seed)
        self.original_predictor = Predictor(self.model_bytes)
        self.events = []

    def split(self, name):
        return self._splits[name]

    def has_split(self, name):
        return name in self._splits

    def failing_mask(self, name="repair"):
        s = self._splits[name]
        return self.original_predictor.predict(s.x) != s.y

    def predictor(self, data):
        from fixbench.onnxio import Predictor

        return Predictor(data)

    def torch_model(self):
        from fixbench.onnxio.torch_bridge import onnx_to_torch

        return onnx_to_torch(self.model)

    def progress(self, fraction, stage="", message="", **metrics):
        self.events.append((fraction, stage))

    def should_stop(self):
        return False


def test_repair_prunes_the_neuron_picks_the_threshold_on_validation_and_explains_itself():
    approach = _approach()
    model, _, x, y = _bn_fault()
    fx = build_fixture(0)
    vx, vy = load_split(fx.splits["valid"])[:2]
    splits = {"repair": (x, y), "valid": (vx.reshape(-1, FEATURES, 1, 1).astype(np.float32), vy.astype(np.int64))}
    params = approach.ANP.resolve_params({"iterations": 150, "batch_size": 32, "min_bn_layers": 1})
    ctx = _Ctx(model, splits, params)
    assert approach.ANP().check(ctx) is None
    outcome = approach.ANP().repair(ctx)
    assert outcome.model is not None and [n.index for n in outcome.diagnosis.neurons] == [BAD]
    assert outcome.metrics["valid_acc"] > outcome.metrics["valid_acc_before"]
    assert "thresholds tried" in outcome.message and ctx.events and ctx.events[0][1] == "mask optimisation"
    assert _acc(outcome.model, *splits["valid"]) == pytest.approx(outcome.metrics["valid_acc"])
