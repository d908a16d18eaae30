"""Loss values on known inputs, for probability outputs and for logits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from fixbench.zoo.losses import EPSILON, compute_loss

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0]])
Y = torch.tensor([0, 1])


def test_crossentropy_on_probabilities_equals_crossentropy_on_logits():
    probs = torch.softmax(LOGITS, 1)
    expected = F.cross_entropy(LOGITS, Y)
    assert compute_loss("categorical_crossentropy", probs, Y, False) == pytest.approx(float(expected), rel=1e-5)
    assert compute_loss("categorical_crossentropy", LOGITS, Y, True) == pytest.approx(float(expected), rel=1e-5)
    assert compute_loss("sparse_categorical_crossentropy", probs, Y, False) == pytest.approx(float(expected), rel=1e-5)


def test_crossentropy_clamps_zero_probabilities():
    probs = torch.tensor([[0.0, 1.0, 0.0]])
    value = compute_loss("categorical_crossentropy", probs, torch.tensor([0]), False)
    assert float(value) == pytest.approx(-math.log(EPSILON), rel=1e-4)


def test_kld_with_one_hot_targets_is_crossentropy():
    probs = torch.softmax(LOGITS, 1)
    ce = compute_loss("categorical_crossentropy", probs, Y, False)
    assert compute_loss("kullback_leibler_divergence", probs, Y, False) == pytest.approx(float(ce), abs=1e-5)
    assert compute_loss("kullback_leibler_divergence", LOGITS, Y, True) == pytest.approx(float(ce), abs=1e-5)


def test_regression_losses_compare_with_one_hot_targets():
    out = torch.tensor([[0.5, 0.25, 0.25]])
    y = torch.tensor([0])
    assert compute_loss("mean_squared_error", out, y, False) == pytest.approx((0.25 + 0.0625 * 2) / 3)
    assert compute_loss("mean_absolute_error", out, y, False) == pytest.approx(1.0 / 3)
    assert compute_loss("hinge", out, y, False) == pytest.approx((0.5 + 1.25 + 1.25) / 3)
    assert compute_loss("squared_hinge", out, y, False) == pytest.approx((0.25 + 1.5625 * 2) / 3)
    assert compute_loss("categorical_hinge", out, y, False) == pytest.approx(0.75)
    assert compute_loss("logcosh", out, y, False) == pytest.approx(
        (math.log(math.cosh(0.5)) + 2 * math.log(math.cosh(0.25))) / 3, rel=1e-5
    )


def test_binary_crossentropy_on_logits_matches_probabilities():
    probs = torch.sigmoid(LOGITS)
    a = compute_loss("binary_crossentropy", probs, Y, False)
    b = compute_loss("binary_crossentropy", LOGITS, Y, True)
    assert float(a) == pytest.approx(float(b), rel=1e-4)


def test_poisson_reads_logits_as_log_rates():
    rates = torch.exp(LOGITS)
    a = compute_loss("poisson", rates, Y, False)
    b = compute_loss("poisson", LOGITS, Y, True)
    assert float(a) == pytest.approx(float(b), rel=1e-4)


def test_unknown_loss_is_named():
    with pytest.raises(ValueError, match="^loss"):
        compute_loss("focal", LOGITS, Y, True)
