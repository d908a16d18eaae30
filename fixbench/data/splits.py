"""Splits (train / valid / repair / test) and the seeded, class-stratified partitioning of pools.

Every random choice takes its generator from `seeded_rng(seed, ...)`, so the same seed gives
byte-identical split files and another seed gives other ones.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fixbench.arrays import Split, npz_bytes, save_npz

from .spec import SPLIT_NAMES, DatasetSpec, SplitProportions


@dataclass(frozen=True)
class Splits:
    """The four splits of a dataset, with the spec of the data they hold."""

    spec: DatasetSpec
    train: Split
    valid: Split
    repair: Split
    test: Split

    def __iter__(self) -> Iterator[tuple[str, Split]]:
        return iter((name, getattr(self, name)) for name in SPLIT_NAMES)

    def sizes(self) -> dict[str, int]:
        """Number of samples per split."""
        return {name: len(split) for name, split in self}

    def npz_bytes(self) -> dict[str, bytes]:
        """Deterministic npz bytes of every split."""
        return {name: npz_bytes(split.arrays()) for name, split in self}

    def save(self, directory: str | Path) -> dict[str, Path]:
        """Writes `<directory>/<split>.npz` for each split; returns the paths."""
        directory = Path(directory)
        return {name: save_npz(directory / f"{name}.npz", split.arrays()) for name, split in self}


def seeded_rng(seed: int, *labels: str | int) -> np.random.Generator:
    """A generator for one purpose: the seed plus labels (dataset name, split, ...) pick its stream.

    Labels keep streams of different datasets and splits independent of each other, so that
    changing how one split is drawn never shifts another.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    keys = [int(seed)]
    for label in labels:
        keys.append(int(label) if isinstance(label, (int, np.integer)) else zlib.crc32(str(label).encode()))
    return np.random.default_rng(np.random.SeedSequence(keys))


def check_scale(scale: float, *, allow_above_one: bool) -> float:
    """Validates `scale`: positive, and at most 1 for datasets whose samples cannot be made up."""
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
        raise ValueError(f"scale must be a positive number, got {scale!r}")
    if scale > 1 and not allow_above_one:
        raise ValueError(f"scale must be at most 1 for a dataset of real samples, got {scale!r}")
    return float(scale)


def allocate(total: int, weights: tuple[float, ...], tie_offset: int = 0) -> list[int]:
    """Splits `total` into integer parts proportional to `weights` (largest remainder).

    Ties go round-robin by `tie_offset` (e.g. the class index) so that no split systematically
    collects the rounding surplus of every class.
    """
    w = np.asarray(weights, dtype=np.float64)
    exact = total * w / w.sum()
    parts = np.floor(exact).astype(np.int64)
    remainder = exact - parts
    order = sorted(range(len(w)), key=lambda j: (-round(remainder[j], 12), (j - tie_offset) % len(w)))
    for j in order[: total - int(parts.sum())]:
        parts[j] += 1
    return [int(p) for p in parts]


def stratified_partition(
    y: np.ndarray,
    proportions: SplitProportions,
    rng: np.random.Generator,
    scale: float = 1.0,
    official_test: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Indices of each split, stratified by class, in shuffled order.

    Each class is shuffled, shrunk to `round(n_c * scale)` and cut by the proportions. When the
    data comes with an official train/test division (`official_test`, a boolean mask), the
    official training part is cut into train/valid and the official test part into
    repair/test, as the study cut MNIST's 60,000 + 10,000 digits.
    """
    y = np.asarray(y)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_NAMES}
    p = proportions.as_tuple()
    if official_test is None:
        groups = [(np.ones(len(y), dtype=bool), SPLIT_NAMES, p)]
    else:
        official_test = np.asarray(official_test, dtype=bool)
        if official_test.shape != y.shape:
            raise ValueError(f"official_test mask has shape {official_test.shape}, labels {y.shape}")
        groups = [(~official_test, SPLIT_NAMES[:2], p[:2]), (official_test, SPLIT_NAMES[2:], p[2:])]
    classes = np.unique(y)
    for mask, names, weights in groups:
        for c_index, c in enumerate(classes):
            members = np.flatnonzero(mask & (y == c))
            if len(members) == 0:
                continue
            members = rng.permutation(members)
            keep = int(np.floor(len(members) * scale + 0.5))
            members = members[:keep]
            counts = allocate(len(members), weights, tie_offset=c_index)
            start = 0
            for name, count in zip(names, counts, strict=True):
                parts[name].append(members[start : start + count])
                start += count
    out: dict[str, np.ndarray] = {}
    for name in SPLIT_NAMES:
        idx = np.concatenate(parts[name]) if parts[name] else np.empty(0, dtype=np.int64)
        out[name] = rng.permutation(idx.astype(np.int64))
    empty = [name for name in SPLIT_NAMES if len(out[name]) == 0]
    if empty:
        raise ValueError(
            f"scale={scale!r} leaves split(s) {empty} empty ({len(y)} samples available); use a larger scale"
        )
    return out


Finaliser = Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]]


def to_unit_float(x: np.ndarray) -> np.ndarray:
    """uint8 pixels → float32 in [0, 1]; other dtypes are taken to be in the input scale already."""
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / np.float32(255.0)).astype(np.float32)
    return x.astype(np.float32, copy=False)


def splits_from_pool(
    spec: DatasetSpec,
    x: np.ndarray,
    y: np.ndarray,
    group: np.ndarray | None,
    seed: int,
    scale: float,
    official_test: np.ndarray | None = None,
    finalise: Finaliser | None = None,
) -> Splits:
    """Partitions a pool of labelled samples into the spec's four splits.

    `finalise` maps the raw `x` of each split to float32 inputs in the spec's input scale; it
    sees all four splits at once so that it can fit statistics on `train` only. Without it,
    uint8 pixels are divided by 255.
    """
    rng = seeded_rng(seed, spec.name, "partition")
    index = stratified_partition(y, spec.proportions, rng, scale, official_test)
    raw = {name: x[idx] for name, idx in index.items()}
    xs = finalise(raw) if finalise is not None else {name: to_unit_float(v) for name, v in raw.items()}
    return Splits(
        spec=spec,
        **{
            name: Split(
                x=np.ascontiguousarray(xs[name], dtype=np.float32),
                y=np.asarray(y[idx], dtype=np.int64),
                group=None if group is None else np.asarray(group[idx], dtype=np.int64),
            )
            for name, idx in index.items()
        },
    )
