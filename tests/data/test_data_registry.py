"""Registry: names, declarations, unknown names, contract checks on what builders return."""

from __future__ import annotations

import pytest

from fixbench.data import (
    DatasetSpec,
    SplitProportions,
    UnknownDatasetError,
    get_dataset,
    list_datasets,
    load_splits,
)
from fixbench.data.spec import SMALL_SET_PROPORTIONS, STUDY_PROPORTIONS


def test_offline_datasets_are_registered() -> None:
    names = list_datasets()
    assert names == sorted(names)
    assert {"mnist5000", "digits"} <= set(names)


def test_mnist5000_declaration() -> None:
    spec = get_dataset("mnist5000")
    assert spec.input_shape == (1, 28, 28)
    assert spec.num_classes == 10 and len(spec.class_names) == 10
    assert spec.pgd_epsilon == 0.15
    assert spec.sensitive_attribute is None and not spec.has_groups
    assert spec.proportions == SMALL_SET_PROPORTIONS
    assert not spec.stand_in and spec.stands_in_for is None


def test_unknown_dataset_lists_known_names() -> None:
    with pytest.raises(UnknownDatasetError) as info:
        get_dataset("no-such-set")
    message = str(info.value)
    assert "no-such-set" in message and "mnist5000" in message
    with pytest.raises(UnknownDatasetError):
        load_splits("no-such-set", seed=0)
    # Callers that treat the registry as a mapping may catch KeyError.
    with pytest.raises(KeyError):
        get_dataset("no-such-set")


def test_study_proportions_match_the_papers_mnist_split() -> None:
    total = 70_000
    assert round(STUDY_PROPORTIONS.train * total) == 54_000
    assert round(STUDY_PROPORTIONS.valid * total) == 6_000
    assert round(STUDY_PROPORTIONS.repair * total) == 5_000
    assert round(STUDY_PROPORTIONS.test * total) == 5_000


def test_small_set_proportions_keep_ratios() -> None:
    p = SMALL_SET_PROPORTIONS
    assert p.train / p.valid == pytest.approx(9.0)
    assert p.repair == p.test
    assert p.repair + p.test == pytest.approx(0.30)


@pytest.mark.parametrize(
    "values",
    [(0.5, 0.5, 0.5, 0.5), (1.0, 0.0, 0.0, 0.0), (0.7, 0.1, 0.1, 0.2), (0.7, -0.1, 0.2, 0.2)],
)
def test_bad_proportions_are_refused(values: tuple[float, float, float, float]) -> None:
    with pytest.raises(ValueError, match="SplitProportions"):
        SplitProportions(*values)


def _spec(**changes: object) -> DatasetSpec:
    base = {
        "name": "toy",
        "input_shape": (3,),
        "num_classes": 2,
        "class_names": ("a", "b"),
        "sensitive_attribute": None,
        "group_names": (),
        "stand_in": False,
        "stands_in_for": None,
        "description": "toy",
        "proportions": SMALL_SET_PROPORTIONS,
        "pgd_epsilon": None,
        "modality": "tabular",
        "input_range": None,
    }
    base.update(changes)
    return DatasetSpec(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"class_names": ("a",)}, "class_names"),
        ({"sensitive_attribute": "sex"}, "group_names"),
        ({"group_names": ("f", "m")}, "group_names"),
        ({"stand_in": True, "stands_in_for": "x"}, "-standin"),
        ({"stand_in": True}, "stands_in_for"),
        ({"input_shape": (0,)}, "input_shape"),
        ({"num_classes": 1, "class_names": ("a",)}, "num_classes"),
        ({"pgd_epsilon": 0.0}, "pgd_epsilon"),
        ({"modality": "audio"}, "modality"),
        ({"needs_path": True}, "path_layout"),
    ],
)
def test_inconsistent_specs_name_the_field(changes: dict[str, object], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        _spec(**changes)


def test_spec_is_frozen() -> None:
    spec = get_dataset("mnist5000")
    with pytest.raises(AttributeError):
        spec.num_classes = 3  # type: ignore[misc]


@pytest.mark.parametrize("scale", [0, -1.0, 1.5, "1"])
def test_bad_scale_is_refused_for_real_data(scale: object) -> None:
    with pytest.raises(ValueError, match="scale"):
        load_splits("digits", seed=0, scale=scale)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [-1, 1.5, "0", True])
def test_bad_seed_is_refused(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        load_splits("digits", seed=seed)  # type: ignore[arg-type]
