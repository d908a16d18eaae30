"""Adult / COMPAS / German: encoding, train-only standardisation, groups, bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fixbench.data import DatasetFormatError, DatasetPathError, get_dataset, load_splits
from fixbench.data.tabular import ADULT_SCHEMA, GERMAN_SCHEMA, packaged_dataset_dir


@pytest.mark.parametrize(
    ("name", "rows", "features", "groups"),
    [("adult", 45_222, 88, 2), ("compas", 6_172, 18, 2), ("german", 1_000, 63, 2)],
)
def test_packaged_tables_load(name: str, rows: int, features: int, groups: int) -> None:
    spec = get_dataset(name)
    splits = load_splits(name, seed=0)
    assert spec.input_shape == (features,) and spec.modality == "tabular"
    assert sum(splits.sizes().values()) == rows
    for split_name, split in splits:
        assert split.group is not None and set(np.unique(split.group)) == set(range(groups)), split_name
        assert set(np.unique(split.y)) == {0, 1}, split_name
        assert "group" in split.arrays()


def test_numeric_columns_use_train_statistics_only() -> None:
    splits = load_splits("german", seed=3)
    numeric = len(GERMAN_SCHEMA.numeric)
    train = splits.train.x[:, :numeric]
    assert np.allclose(train.mean(axis=0), 0.0, atol=1e-5)
    assert np.allclose(train.std(axis=0), 1.0, atol=1e-4)
    # Test statistics were not used: the test split is not exactly standardised.
    assert not np.allclose(splits.test.x[:, :numeric].mean(axis=0), 0.0, atol=1e-5)
    # One-hot blocks stay 0/1, one hot value per categorical column.
    onehot = splits.train.x[:, numeric:]
    assert set(np.unique(onehot)) == {0.0, 1.0}
    assert np.allclose(onehot.sum(axis=1), len(GERMAN_SCHEMA.categorical))


def test_adult_keeps_official_train_test_division() -> None:
    splits = load_splits("adult", seed=0)
    # adult.test holds 15,060 complete rows, halved into repair/test.
    assert splits.sizes()["repair"] + splits.sizes()["test"] == 15_060
    assert splits.sizes()["train"] + splits.sizes()["valid"] == 30_162


def test_group_codes_follow_the_sensitive_attribute() -> None:
    splits = load_splits("adult", seed=0, scale=0.1)
    sex = ADULT_SCHEMA.feature_names.index("sex=Male")
    for _, split in splits:
        assert np.array_equal(split.x[:, sex] == 1.0, split.group == 1)
    assert load_splits("german", seed=0).train.group is not None
    assert get_dataset("german").group_names == ("under 25", "25 and older")


def test_tabular_splits_are_deterministic() -> None:
    a = load_splits("compas", seed=5, scale=0.3).npz_bytes()
    assert a == load_splits("compas", seed=5, scale=0.3).npz_bytes()
    assert a["train"] != load_splits("compas", seed=6, scale=0.3).npz_bytes()["train"]


def _copy_german(tmp_path: Path, edit=None) -> Path:
    lines = (packaged_dataset_dir() / "german" / "german.data").read_text().splitlines()[:200]
    if edit is not None:
        lines = edit(lines)
    (tmp_path / "german.data").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_tables_can_come_from_a_given_folder(tmp_path: Path) -> None:
    splits = load_splits("german", seed=0, path=_copy_german(tmp_path))
    assert sum(splits.sizes().values()) == 200


def test_missing_table_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetPathError, match="german.data"):
        load_splits("german", seed=0, path=tmp_path)


def test_undeclared_category_is_a_format_error(tmp_path: Path) -> None:
    def corrupt(lines: list[str]) -> list[str]:
        return [lines[0].replace("A11", "A19", 1), *lines[1:]]

    with pytest.raises(DatasetFormatError, match=r"german\.data.*'status'.*A19"):
        load_splits("german", seed=0, path=_copy_german(tmp_path, corrupt))


def test_wrong_column_count_is_a_format_error(tmp_path: Path) -> None:
    (tmp_path / "german.data").write_text("1 2 3\n4 5 6\n")
    with pytest.raises(DatasetFormatError, match="german.data"):
        load_splits("german", seed=0, path=tmp_path)


def test_adult_bad_label_is_a_format_error(tmp_path: Path) -> None:
    row = "39, State-gov, 77516, Bachelors, 13, Never-married, Adm-clerical, Not-in-family, White, Male, 0, 0, 40, United-States, {}"
    (tmp_path / "adult.data").write_text("\n".join([row.format("<=50K")] * 20 + [row.format("rich")]))
    (tmp_path / "adult.test").write_text("|1x3 Cross validator\n" + row.format(">50K.") + "\n")
    with pytest.raises(DatasetFormatError, match=r"adult\.data.*income.*rich"):
        load_splits("adult", seed=0, path=tmp_path)
