"""UTKFace: a folder of face images named `age_gender_race_datetime.jpg` (the aligned and
cropped release appends `.chip.jpg`). Gender 0 = male, 1 = female; race 0-4 = White, Black,
Asian, Indian, Others. The label is gender; the group (sensitive attribute) is race."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import DatasetFormatError, DatasetPathError
from .images import is_image_name, read_image

UTKFACE_RACES = ("White", "Black", "Asian", "Indian", "Others")
UTKFACE_GENDERS = ("male", "female")
UTKFACE_LAYOUT = (
    "a folder of UTKFace images named age_gender_race_datetime.jpg (or .jpg.chip.jpg), gender 0/1, race 0-4"
)

_NAME = re.compile(r"^(\d{1,3})_(\d+)_(\d+)_(\d+)\.", re.ASCII)
# The official release has three files whose names lack the race field (age_gender_datetime);
# without the sensitive attribute they cannot take part in a fairness study.
_MISSING_RACE = re.compile(r"^\d{1,3}_[01]_\d{14,}\.", re.ASCII)


def parse_utkface_name(path: Path) -> tuple[int, int, int]:
    """(age, gender, race) from a UTKFace file name; a malformed name is a format error."""
    match = _NAME.match(path.name)
    if match is None:
        raise DatasetFormatError(f"{path}: name is not age_gender_race_datetime.jpg ({UTKFACE_LAYOUT})")
    age, gender, race = (int(match.group(i)) for i in (1, 2, 3))
    if gender >= len(UTKFACE_GENDERS) or race >= len(UTKFACE_RACES):
        raise DatasetFormatError(f"{path}: gender {gender} or race {race} outside UTKFace's codes (0-1, 0-4)")
    return age, gender, race


def read_utkface(
    root: str | Path, size: tuple[int, int] = (32, 32), skip_missing_race: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All faces: (x uint8 (n, 3, *size), y = gender int64, group = race int64), sorted by name.

    Files without an image suffix (.jpg/.jpeg/.png) are not part of the set and are ignored;
    an image file with a malformed name raises, except names lacking only the race field when
    `skip_missing_race` (three such files ship with UTKFace).
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetPathError(f"UTKFace path {root} is not a folder; expected {UTKFACE_LAYOUT}")
    files = sorted(p for p in root.iterdir() if p.is_file() and is_image_name(p))
    if skip_missing_race:
        files = [p for p in files if not _MISSING_RACE.match(p.name)]
    if not files:
        raise DatasetPathError(f"UTKFace folder {root} holds no images; expected {UTKFACE_LAYOUT}")
    labels = [parse_utkface_name(p) for p in files]
    x = np.stack([read_image(p, size) for p in files])
    y = np.array([gender for _, gender, _ in labels], dtype=np.int64)
    group = np.array([race for _, _, race in labels], dtype=np.int64)
    return x, y, group
