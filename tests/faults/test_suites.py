"""Suite contents (no training): what each suite holds and that every mutation applies."""

from __future__ import annotations

import hashlib
import json

import pytest

from fixbench.faults import OPERATORS, apply_operator, find_recipe, list_suites, suite_recipes
from fixbench.zoo import default_recipe

# Kim et al.'s operators; ARM is implemented but never killed on these subjects at small
# scale (a linear model trains as well), so the suite uses the other eight.
KIM_OPERATORS = {"ACH", "AAL", "HNE", "HLR", "WCI", "RAW", "LCH", "OCH"}


def test_suites_are_listed():
    assert list_suites() == ["kim2023", "quick", "quick-recipe", "you2026"]


def test_quick_suite_keeps_its_fault_and_cache_key():
    (fault,) = suite_recipes("quick")
    assert (fault.id, fault.family, fault.dataset, fault.architecture, fault.seed) == (
        "mnist-lenet5",
        "misclassification",
        "mnist5000",
        "lenet5",
        0,
    )
    # The key as the first suite version computed it, plus the kept training history (issue
    # 21: the bundle now holds the checkpoints of the two epochs before the last, so it is
    # another build); any other change of the key would invalidate CI's cache for nothing.
    content = {
        "v": "1",
        "id": "mnist-lenet5",
        "family": "misclassification",
        "dataset": "mnist5000",
        "architecture": "lenet5",
        "seed": 0,
        "overrides": {},
        "scale": 1.0,
        "history_epochs": 2,
    }
    assert fault.build_key(1.0) == hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:16]


def test_quick_recipe_is_one_small_recipe_fault():
    (fault,) = suite_recipes("quick-recipe")
    assert fault.family == "training_recipe" and fault.operator == "HLR"
    assert fault.effective_scale(1.0) <= 0.2


def test_you2026_has_the_five_subjects_and_the_fairness_subjects():
    recipes = suite_recipes("you2026")
    pairs = {(r.dataset, r.architecture) for r in recipes}
    assert {
        ("mnist5000", "lenet5"),
        ("utkface-standin", "facenet"),
        ("cifar10-standin", "vgg16"),
        ("cifar10s-standin", "resnet18"),
        ("imagenet-standin", "densenet121"),
        ("adult", "mlp"),
        ("compas", "mlp"),
        ("german", "mlp"),
    } <= pairs
    assert all(r.family == "misclassification" for r in recipes)
    assert any(r.causes.get("group_imbalance") for r in recipes)
    assert any(r.causes.get("label_noise") for r in recipes)
    assert any(r.causes.get("class_imbalance") for r in recipes)


def test_kim2023_has_9_real_faults_and_21_mutants_over_four_datasets():
    recipes = suite_recipes("kim2023")
    assert len(recipes) == 30
    real = [r for r in recipes if OPERATORS[r.operator].source == "deepfd"]
    mutants = [r for r in recipes if OPERATORS[r.operator].source != "deepfd"]
    assert sorted(r.operator for r in real) == [f"D{i}" for i in range(1, 10)]
    assert len(mutants) == 21
    assert KIM_OPERATORS <= {r.operator for r in mutants}
    per_dataset = {}
    for r in mutants:
        per_dataset[r.dataset] = per_dataset.get(r.dataset, 0) + 1
    assert per_dataset == {"mnist5000": 3, "cifar10-standin": 3, "reuters-standin": 7, "unityeyes-standin": 8}
    assert all(r.family == "training_recipe" for r in recipes)


@pytest.mark.parametrize("suite", ["kim2023", "quick-recipe"])
def test_every_candidate_mutation_applies_to_its_original(suite):
    for r in suite_recipes(suite):
        original = default_recipe(r.architecture, **dict(r.overrides))
        for params in r.candidates or ({},):
            mutant = apply_operator(r.operator, original, params)
            assert mutant.diff(original), r.id


def test_fault_ids_are_unique_across_suites():
    seen = {}
    for suite in list_suites():
        for r in suite_recipes(suite):
            assert seen.setdefault(r.id, r) == r, f"{r.id} means two different faults"
    assert find_recipe("kim-u8").operator == "HNE"
