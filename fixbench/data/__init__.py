"""Datasets of the fault benchmark: declarations, a registry, seeded splits, real-format loaders.

from fixbench.data import load_splits
splits = load_splits("mnist5000", seed=0)
splits.save("out/")          # train.npz, valid.npz, repair.npz, test.npz
"""

from .errors import (
    DatasetBuildError,
    DatasetError,
    DatasetFormatError,
    DatasetPathError,
    UnknownDatasetError,
)
from .registry import get_dataset, list_datasets, load_splits, register
from .spec import (
    SMALL_SET_PROPORTIONS,
    SPLIT_NAMES,
    STUDY_PROPORTIONS,
    DatasetSpec,
    SplitProportions,
)
from .splits import Split, Splits

__all__ = [
    "SMALL_SET_PROPORTIONS",
    "SPLIT_NAMES",
    "STUDY_PROPORTIONS",
    "DatasetBuildError",
    "DatasetError",
    "DatasetFormatError",
    "DatasetPathError",
    "DatasetSpec",
    "Split",
    "SplitProportions",
    "Splits",
    "UnknownDatasetError",
    "get_dataset",
    "list_datasets",
    "load_splits",
    "register",
]
