"""The Kim et al. search space: declared sizes, seeded sampling, coverage by the trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fixbench.zoo import (
    ARCHITECTURES,
    INITIALIZERS,
    LAST_ACTIVATIONS,
    LOSSES,
    OPTIMIZERS,
    SEARCH_SPACE,
    SEARCHED_FIELDS,
    RecipeError,
    default_recipe,
    describe_search_space,
    sample_recipe,
)
from fixbench.zoo.layers import ACTIVATION_MODULES, init_weight
from fixbench.zoo.losses import LOSS_FUNCTIONS
from fixbench.zoo.optimizers import OPTIMIZER_FACTORIES
from fixbench.zoo.options import ARCHITECTURE_OPTIONS


def test_dimension_sizes_match_the_paper():
    assert len(SEARCH_SPACE["loss"].choices) == 13
    assert len(SEARCH_SPACE["optimizer"].choices) == 7
    assert len(SEARCH_SPACE["activation"].choices) == 11
    assert len(SEARCH_SPACE["initializer"].choices) == 13
    assert (SEARCH_SPACE["learning_rate"].low, SEARCH_SPACE["learning_rate"].high) == (1e-6, 10.0)
    assert (SEARCH_SPACE["batch_size"].low, SEARCH_SPACE["batch_size"].high) == (16, 512)
    assert (SEARCH_SPACE["epochs"].low, SEARCH_SPACE["epochs"].high) == (1.1, 1.3)


def test_every_declared_name_is_implemented():
    assert set(LOSS_FUNCTIONS) == set(LOSSES)
    assert set(OPTIMIZER_FACTORIES) == set(OPTIMIZERS)
    assert set(ACTIVATION_MODULES) == set(LAST_ACTIVATIONS)
    assert set(ARCHITECTURE_OPTIONS) == set(ARCHITECTURES)
    gen = torch.Generator().manual_seed(0)
    for name in INITIALIZERS:
        w = torch.full((8, 4, 3, 3), float("nan"))
        init_weight(w, name, gen)
        assert torch.isfinite(w).all(), name


def test_initializers_have_keras_scales():
    gen = torch.Generator().manual_seed(0)
    w = torch.empty(400, 300)
    init_weight(w, "he_uniform", gen)
    assert float(w.abs().max()) <= (6 / 300) ** 0.5 + 1e-6
    init_weight(w, "glorot_normal", gen)
    assert float(w.std()) == pytest.approx((2 / 700) ** 0.5, rel=0.05)
    init_weight(w, "orthogonal", gen)
    assert torch.allclose(w.T @ w, torch.eye(300), atol=1e-4)


def test_description_is_json_able():
    described = json.loads(json.dumps(describe_search_space()))
    assert described["loss"]["kind"] == "categorical"
    assert described["learning_rate"] == {"kind": "log_uniform", "low": 1e-6, "high": 10.0}


def test_sampling_is_seeded_and_varies():
    base = default_recipe("lenet5")
    a = [sample_recipe(base, np.random.default_rng(11)) for _ in range(2)]
    assert a[0] == a[1]
    draws = [sample_recipe(base, np.random.default_rng(s)) for s in range(40)]
    assert len(set(draws)) == 40
    assert len({d.loss for d in draws}) > 5 and len({d.optimizer for d in draws}) > 4


@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_samples_stay_in_the_space_and_keep_the_rest(architecture):
    base = default_recipe(architecture, dropout=0.1, label_noise=0.05)
    rng = np.random.default_rng(3)
    for _ in range(25):
        r = sample_recipe(base, rng)
        assert r.architecture == architecture
        assert 1e-6 <= r.learning_rate <= 10.0 and 16 <= r.batch_size <= 512
        assert base.epochs < r.epochs <= round(base.epochs * 1.3) + 1
        assert 1 <= len(r.hidden_units) <= 4 and all(16 <= u <= 512 for u in r.hidden_units)
        changed = {f for f, _, _ in base.diff(r)}
        assert changed <= set(SEARCHED_FIELDS)
        assert (r.dropout, r.label_noise, r.last_activation) == (0.1, 0.05, base.last_activation)


def test_sampling_can_be_restricted_to_some_fields():
    base = default_recipe("mlp")
    r = sample_recipe(base, np.random.default_rng(0), fields=["learning_rate", "optimizer"])
    assert {f for f, _, _ in base.diff(r)} <= {"learning_rate", "optimizer"}
    with pytest.raises(RecipeError, match="dropout"):
        sample_recipe(base, np.random.default_rng(0), fields=["dropout"])
    with pytest.raises(TypeError, match="rng"):
        sample_recipe(base, 0)  # type: ignore[arg-type]
