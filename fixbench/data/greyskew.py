"""CIFAR-10S's colour skew (Wang et al., CVPR 2020, "Towards Fairness in Visual Recognition"):
half of the images grey; in training, each class is ~95 % one of the two, alternating by class,
so that greyness becomes a shortcut a model can learn; evaluation splits are 50/50 per class."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from .splits import Split, allocate, seeded_rng

GREY, COLOUR = 0, 1
GROUP_NAMES = ("grey", "colour")
TRAIN_MAJORITY = 0.95


def to_grey(x: np.ndarray) -> np.ndarray:
    """ITU-R 601 luma replicated over the three channels; NCHW in, NCHW out, same dtype."""
    luma = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    if x.dtype == np.uint8:
        luma = np.rint(luma).clip(0, 255)
    return np.repeat(luma[:, None].astype(x.dtype), 3, axis=1)


def grey_codes(y: np.ndarray, split_name: str, rng: np.random.Generator) -> np.ndarray:
    """Group code per sample: in `train` even classes ~95 % colour and odd classes ~95 % grey;
    elsewhere an even 50/50 per class. Counts are exact per class, positions random."""
    codes = np.empty(len(y), dtype=np.int64)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        if split_name == "train":
            majority = COLOUR if c % 2 == 0 else GREY
            n_major, n_minor = allocate(len(members), (TRAIN_MAJORITY, 1 - TRAIN_MAJORITY))
            values = np.r_[np.full(n_major, majority), np.full(n_minor, 1 - majority)]
        else:
            n_grey, n_colour = allocate(len(members), (0.5, 0.5), tie_offset=int(c))
            values = np.r_[np.full(n_grey, GREY), np.full(n_colour, COLOUR)]
        codes[members] = rng.permutation(values)
    return codes


def apply_grey_skew(splits: Mapping[str, Split], dataset: str, seed: int) -> dict[str, Split]:
    """Turns colour splits into CIFAR-10S-style splits with `group` = grey (0) / colour (1)."""
    out = {}
    for name, split in splits.items():
        codes = grey_codes(split.y, name, seeded_rng(seed, dataset, "grey", name))
        x = split.x.copy()
        grey = codes == GREY
        x[grey] = to_grey(x[grey])
        out[name] = Split(x=x, y=split.y, group=codes)
    return out
