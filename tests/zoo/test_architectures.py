"""Every architecture builds, runs, exports to ONNX and comes back through onnx2torch."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from fixbench.onnxio import Predictor
from fixbench.onnxio.torch_bridge import onnx_to_torch, torch_to_onnx_bytes
from fixbench.zoo import ARCHITECTURES, LAST_ACTIVATIONS, build_model, default_recipe
from fixbench.zoo.architectures import BUILDERS
from fixbench.zoo.layers import input_statistics

# (input shape, recipe overrides) per architecture: small but exercising every layer kind.
CASES = {
    "lenet5": ((1, 28, 28), {}),
    "vgg16": ((3, 32, 32), {}),
    "resnet18": ((3, 32, 32), {}),
    "facenet": ((3, 32, 32), {}),
    "densenet121": ((3, 32, 32), {"options": {"blocks": "2,2,2,2", "stem": "imagenet"}}),
    "mlp": ((6,), {}),
    "textmlp": ((50,), {}),
}


def _inputs(shape, n=6, seed=0):
    rng = np.random.default_rng(seed)
    if len(shape) == 1 and shape[0] == 50:  # word counts
        return rng.poisson(0.5, size=(n, *shape)).astype(np.float32)
    return rng.random((n, *shape), dtype=np.float32)


def _built(architecture, **extra):
    shape, overrides = CASES[architecture]
    recipe = default_recipe(architecture, **{**overrides, **extra})
    x = _inputs(shape, n=16)
    model = build_model(recipe, shape, 4, input_statistics(x), seed=0)
    # One training-mode pass moves BatchNorm's running statistics away from (0, 1), so the
    # parity check below would notice BatchNorm being dropped or folded wrongly.
    model.train()
    with torch.no_grad():
        model(torch.from_numpy(x))
    return model.eval(), shape


def test_every_declared_architecture_has_a_builder():
    assert set(BUILDERS) == set(ARCHITECTURES) == set(CASES)


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_builds_runs_exports_and_reimports(architecture):
    model, shape = _built(architecture)
    x = _inputs(shape, seed=1)
    ref = model(torch.from_numpy(x)).detach().numpy()
    assert ref.shape == (len(x), 4)
    np.testing.assert_allclose(ref.sum(axis=1), 1.0, atol=1e-5)  # softmax by default

    data = torch_to_onnx_bytes(model, torch.zeros(1, *shape))
    proto = onnx.load_from_string(data)
    onnx.checker.check_model(proto)
    ort = Predictor(data, threads=1).scores(x)
    np.testing.assert_allclose(ort, ref, atol=1e-5)
    back = onnx_to_torch(proto)
    with torch.no_grad():
        again = back(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(again, ref, atol=1e-5)

    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(node.op_type == "BatchNormalization" for node in proto.graph.node) == n_bn
    if architecture in ("vgg16", "resnet18", "facenet", "densenet121"):
        assert n_bn > 0


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_training_mode_forward_and_backward(architecture):
    model, shape = _built(architecture, dropout=0.2)
    model.train()
    out = model(torch.from_numpy(_inputs(shape, n=4)))
    out[:, 0].sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("last", LAST_ACTIVATIONS)
def test_last_activation_is_in_the_exported_graph(last):
    model, shape = _built("mlp", last_activation=last)
    x = _inputs(shape, seed=2)
    with torch.no_grad():
        logits = model.body(model.normalize(torch.from_numpy(x)))
    scores = Predictor(torch_to_onnx_bytes(model, torch.zeros(1, *shape)), threads=1).scores(x)
    expected = {
        "linear": logits,
        "softmax": torch.softmax(logits, 1),
        "double_softmax": torch.softmax(torch.softmax(logits, 1), 1),
        "sigmoid": torch.sigmoid(logits),
        "relu": torch.relu(logits),
        "hard_sigmoid": torch.clamp(0.2 * logits + 0.5, 0, 1),
        "softsign": logits / (1 + logits.abs()),
        "softplus": torch.nn.functional.softplus(logits),
        "exponential": torch.exp(logits),
        "tanh": torch.tanh(logits),
        "elu": torch.nn.functional.elu(logits),
        "selu": torch.selu(logits),
    }[last]
    np.testing.assert_allclose(scores, expected.numpy(), rtol=1e-5, atol=1e-5)


def test_lenet5_has_the_classic_shape_on_mnist():
    model, _ = _built("lenet5")
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [6, 16]
    assert [(d.in_features, d.out_features) for d in dense] == [(400, 120), (120, 84), (84, 4)]


def test_lenet5_accepts_small_digits():
    recipe = default_recipe("lenet5")
    out = build_model(recipe, (1, 8, 8), 10)(torch.zeros(2, 1, 8, 8))
    assert out.shape == (2, 10)


def test_width_and_depth_knobs():
    def convs(architecture, shape=(3, 32, 32), **changes):
        model = build_model(default_recipe(architecture, normalize_input=False, **changes), shape, 10)
        return [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]

    assert len(convs("vgg16")) == 13
    assert len(convs("vgg16", options={"depth": "11"})) == 8
    assert max(convs("vgg16", width_multiplier=0.25)) == 2 * max(convs("vgg16", width_multiplier=0.125))
    assert max(convs("resnet18", width_multiplier=1.0)) == 512
    assert len(convs("densenet121", options={"blocks": "6,12,24,16"})) == 1 + 2 * 58 + 3  # DenseNet-121
    assert convs("facenet", options={"blocks": "2"}, width_multiplier=1.0) == [32, 32, 64, 64]
    # ImageNet stem on a larger image: 7x7 stride 2 first.
    recipe = default_recipe("resnet18", normalize_input=False, options={"stem": "imagenet"})
    model = build_model(recipe, (3, 72, 72), 10)
    first = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first.kernel_size == (7, 7) and first.stride == (2, 2)
    assert model(torch.zeros(2, 3, 72, 72)).shape == (2, 10)


def test_hidden_units_and_dropout_build_the_dense_head():
    model = build_model(default_recipe("mlp", hidden_units=(7, 5, 3), dropout=0.25, normalize_input=False), (6,), 4)
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [d.out_features for d in dense] == [7, 5, 3, 4]
    assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == 4


def test_same_seed_same_initial_weights():
    recipe = default_recipe("lenet5", initializer="he_normal")
    a = build_model(recipe, (1, 28, 28), 10, seed=3).state_dict()
    b = build_model(recipe, (1, 28, 28), 10, seed=3).state_dict()
    c = build_model(recipe, (1, 28, 28), 10, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(
    ("architecture", "shape", "kwargs", "field"),
    [
        ("lenet5", (784,), {}, "input_shape"),
        ("textmlp", (1, 8, 8), {}, "input_shape"),
        ("mlp", (6,), {"num_classes": 1}, "num_classes"),
        ("mlp", (6,), {"normalize": True}, "input_stats"),
    ],
)
def test_bad_build_arguments_name_the_argument(architecture, shape, kwargs, field):
    recipe = default_recipe(architecture, normalize_input=kwargs.get("normalize", False))
    with pytest.raises(ValueError, match=f"^{field}"):
        build_model(recipe, shape, kwargs.get("num_classes", 3))
