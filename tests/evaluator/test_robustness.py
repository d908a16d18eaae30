"""PGD / FGSM on a small trained MLP (torch re-import of its ONNX), sample selection, ε
defaults and output-kind handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from evaluator.parity import import_to_torch
from evaluator.robustness import (
    attack_success_rate,
    common_correct_indices,
    default_bounds,
    default_epsilon,
    fgsm,
    pgd_linf,
)
from evaluator.scoring import LOGITS, PROBABILITIES, output_kind
from fixbench.analysis.errors import EmptyInputError, InvalidSettingError, LengthMismatchError
from fixbench.onnxio import Predictor, load_model


@pytest.fixture(scope="module")
def setup(trained):
    torch.set_num_threads(1)
    module, reason = import_to_torch(load_model(trained["onnx"]))
    assert module is not None, reason
    predictor = Predictor(trained["onnx"], threads=1)
    x, y = trained["x_test"], trained["y_test"]
    idx = common_correct_indices(y, [predictor.predict(x)], 60, seed=0)
    return module, predictor, x[idx], y[idx]


def test_pgd_large_eps_fools_almost_everything(setup) -> None:
    module, predictor, x, y = setup
    adv = pgd_linf(module, x, y, eps=0.5, steps=20, seed=0)
    assert attack_success_rate(y, predictor.predict(adv)) >= 90.0
    # Inside the ε-ball and the input bounds.
    assert np.abs(adv - x).max() <= 0.5 + 1e-6 and adv.min() >= 0.0 and adv.max() <= 1.0


def test_pgd_zero_eps_changes_nothing(setup) -> None:
    module, predictor, x, y = setup
    adv = pgd_linf(module, x, y, eps=0.0, steps=5, seed=0)
    assert np.array_equal(adv, x)
    assert attack_success_rate(y, predictor.predict(adv)) == 0.0


def test_pgd_is_seeded_and_at_least_as_strong_as_fgsm(setup) -> None:
    module, predictor, x, y = setup
    # 40 foolbox-sized steps (ε/30 each) travel past FGSM's single ε step; fewer would not.
    a = pgd_linf(module, x, y, eps=0.08, seed=4)
    b = pgd_linf(module, x, y, eps=0.08, seed=4)
    assert np.array_equal(a, b)
    c = pgd_linf(module, x, y, eps=0.08, seed=5)
    assert not np.array_equal(a, c)
    asr_pgd = attack_success_rate(y, predictor.predict(a))
    adv_f = fgsm(module, x, y, eps=0.08)
    asr_fgsm = attack_success_rate(y, predictor.predict(adv_f))
    assert np.abs(adv_f - x).max() <= 0.08 + 1e-6
    assert 0.0 < asr_fgsm <= asr_pgd


def test_softmax_output_is_attacked_through_log_probabilities(trained) -> None:
    model = load_model(trained["onnx_softmax"])
    predictor = Predictor(trained["onnx_softmax"], threads=1)
    x, y = trained["x_test"], trained["y_test"]
    scores = predictor.scores(x[:20])
    assert output_kind(model, scores) == PROBABILITIES
    assert output_kind(load_model(trained["onnx"]), Predictor(trained["onnx"]).scores(x[:20])) == LOGITS
    module, _ = import_to_torch(model)
    idx = common_correct_indices(y, [predictor.predict(x)], 40, seed=1)
    adv = pgd_linf(module, x[idx], y[idx], eps=0.5, steps=20, output_kind=PROBABILITIES, seed=0)
    assert attack_success_rate(y[idx], predictor.predict(adv)) >= 90.0


def test_output_kind_numeric_fallback_and_override(gemm_model) -> None:
    linear = load_model(gemm_model(np.ones((3, 2)), np.zeros(3)))
    assert output_kind(linear, np.array([[0.2, 0.3, 0.5]])) == PROBABILITIES
    assert output_kind(linear, np.array([[2.0, -1.0, 0.5]])) == LOGITS
    assert output_kind(linear, np.array([[0.2, 0.3, 0.5]]), declared=LOGITS) == LOGITS
    with pytest.raises(InvalidSettingError, match="output_kind"):
        output_kind(linear, None, declared="scores")


def test_common_correct_indices() -> None:
    y = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    p1 = np.array([0, 1, 2, 0, 4, 5, 6, 7])  # wrong on 3
    p2 = np.array([0, 1, 0, 3, 4, 5, 6, 0])  # wrong on 2, 7
    all_common = common_correct_indices(y, [p1, p2], 100, seed=0)
    assert all_common.tolist() == [0, 1, 4, 5, 6]
    some = common_correct_indices(y, [p1, p2], 3, seed=7)
    assert len(some) == 3 and set(some) <= {0, 1, 4, 5, 6} and list(some) == sorted(some)
    assert np.array_equal(some, common_correct_indices(y, [p1, p2], 3, seed=7))
    assert len(common_correct_indices(y, [np.zeros(8, dtype=int) - 1], 3, seed=0)) == 0
    with pytest.raises(LengthMismatchError, match=r"predictions\[1\]"):
        common_correct_indices(y, [p1, p2[:5]], 3, seed=0)
    with pytest.raises(InvalidSettingError):
        common_correct_indices(y, [p1], 0, seed=0)


def test_default_epsilon_and_bounds() -> None:
    assert default_epsilon("mnist5000") == 0.15  # from the dataset registry
    assert default_epsilon("MNIST") == 0.15
    assert default_epsilon("utkface") == 0.07
    assert default_epsilon("cifar10") == 0.031
    assert default_epsilon("CIFAR-10S-standin") == 0.035
    assert default_epsilon("cifar10-standin") == 0.031
    assert default_epsilon("imagenet") == 0.007
    with pytest.raises(InvalidSettingError, match="eps"):
        default_epsilon("reuters")
    assert default_bounds("mnist5000") == (0.0, 1.0)
    assert default_bounds("") == (0.0, 1.0)


def test_bad_attack_arguments(setup) -> None:
    module, _, x, y = setup
    with pytest.raises(InvalidSettingError, match="eps"):
        pgd_linf(module, x, y, eps=-0.1)
    with pytest.raises(InvalidSettingError, match="steps"):
        pgd_linf(module, x, y, eps=0.1, steps=0)
    with pytest.raises(InvalidSettingError, match="bounds"):
        fgsm(module, x, y, eps=0.1, bounds=(1.0, 0.0))
    with pytest.raises(LengthMismatchError):
        fgsm(module, x, y[:-1], eps=0.1)
    with pytest.raises(EmptyInputError):
        attack_success_rate(np.array([]), np.array([]))
    with pytest.raises(InvalidSettingError, match="output kind"):
        pgd_linf(module, x, y, eps=0.1, steps=1, output_kind="scores")
