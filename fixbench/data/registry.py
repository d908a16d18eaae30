"""The dataset registry: names → declarations and builders; `load_splits` checks what it returns.

Datasets register themselves when their module is imported; the registry imports the
built-in modules on first use so that `get_dataset("mnist5000")` works without further setup.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import DatasetBuildError, DatasetPathError, UnknownDatasetError
from .spec import DatasetSpec
from .splits import Splits, check_scale

# A builder gets (seed, scale, path) and returns the four splits of its dataset.
Builder = Callable[[int, float, Path | None], Splits]

_BUILTIN_MODULES = (
    "fixbench.data.offline",
    "fixbench.data.tabular",
    "fixbench.data.ondisk",
    "fixbench.data.standins",
)


@dataclass(frozen=True)
class _Entry:
    spec: DatasetSpec
    builder: Builder


_REGISTRY: dict[str, _Entry] = {}
_loaded = False


def register(spec: DatasetSpec, builder: Builder) -> DatasetSpec:
    """Registers a dataset; a second registration of the same name is refused."""
    if spec.name in _REGISTRY:
        raise ValueError(f"dataset {spec.name!r} is already registered")
    _REGISTRY[spec.name] = _Entry(spec, builder)
    return spec


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in _BUILTIN_MODULES:
            importlib.import_module(module)


def list_datasets() -> list[str]:
    """Names of all registered datasets, sorted."""
    _ensure_loaded()
    return sorted(_REGISTRY)


def get_dataset(name: str) -> DatasetSpec:
    """The declaration of dataset `name`; unknown names raise `UnknownDatasetError`."""
    _ensure_loaded()
    try:
        return _REGISTRY[name].spec
    except KeyError:
        raise UnknownDatasetError(name, sorted(_REGISTRY)) from None


def load_splits(name: str, seed: int, scale: float = 1.0, path: str | Path | None = None) -> Splits:
    """Builds the train / valid / repair / test splits of dataset `name`.

    Same (name, seed, scale, data) ⇒ byte-identical split files. `scale` shrinks the number of
    samples (stand-ins may also grow); datasets read from disk need `path`.
    """
    spec = get_dataset(name)
    check_scale(scale, allow_above_one=spec.stand_in)
    if spec.needs_path and path is None:
        raise DatasetPathError(f"dataset {name!r} reads files from disk: pass path= ({spec.path_layout})")
    splits = _REGISTRY[name].builder(seed, scale, None if path is None else Path(path))
    _check_splits(splits, spec)
    return splits


def _check_splits(splits: Splits, declared: DatasetSpec) -> None:
    """Guards the contract every consumer relies on, whatever a builder did."""
    spec = splits.spec
    if spec.name != declared.name:
        raise DatasetBuildError(f"builder of {declared.name!r} returned splits of {spec.name!r}")
    for split_name, split in splits:
        where = f"dataset {spec.name!r}, split {split_name!r}"
        if split.x.dtype != np.float32 or split.y.dtype != np.int64:
            raise DatasetBuildError(f"{where}: x must be float32 and y int64, got {split.x.dtype}/{split.y.dtype}")
        if split.x.shape[1:] != tuple(spec.input_shape) or len(split.x) != len(split.y):
            raise DatasetBuildError(f"{where}: x has shape {split.x.shape}, expected (n, *{spec.input_shape})")
        if len(split.y) and (split.y.min() < 0 or split.y.max() >= spec.num_classes):
            raise DatasetBuildError(f"{where}: labels outside [0, {spec.num_classes})")
        if not np.isfinite(split.x).all():
            raise DatasetBuildError(f"{where}: x holds non-finite values")
        if spec.input_range is not None and len(split.x):
            lo, hi = spec.input_range
            if split.x.min() < lo or split.x.max() > hi:
                raise DatasetBuildError(f"{where}: x outside the declared input range {spec.input_range}")
        if (split.group is not None) != spec.has_groups:
            raise DatasetBuildError(
                f"{where}: group array present={split.group is not None}, declared={spec.has_groups}"
            )
        if split.group is not None:
            if split.group.dtype != np.int64 or len(split.group) != len(split.y):
                raise DatasetBuildError(f"{where}: group must be int64 with one code per sample")
            if len(split.group) and (split.group.min() < 0 or split.group.max() >= spec.num_groups):
                raise DatasetBuildError(f"{where}: group codes outside [0, {spec.num_groups})")
