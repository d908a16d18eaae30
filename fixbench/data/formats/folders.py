"""ImageNet-style class folders: `root/<class>/*.jpg|jpeg|png`, or `root/train/<class>/...`
with `root/val/<class>/...` for the official train/validation division. Classes are the sorted
folder names of the training part (as torchvision's ImageFolder numbers them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetFormatError, DatasetPathError
from .images import is_image_name, read_image

FOLDERS_LAYOUT = (
    "class folders root/<class>/*.jpg|jpeg|png, or root/train/<class>/... and root/val/<class>/... "
    "for the official train/validation division"
)


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(class_dir: Path) -> list[Path]:
    # Walks sub-folders too (some ImageNet copies nest them); sorted for a stable pool order.
    return sorted(p for p in class_dir.rglob("*") if p.is_file() and is_image_name(p))


def read_class_folders(
    root: str | Path, size: tuple[int, int] = (32, 32)
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, tuple[str, ...]]:
    """(x uint8 (n, 3, *size), y int64, official_test mask or None, class names)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetPathError(f"image folder path {root} is not a folder; expected {FOLDERS_LAYOUT}")
    split_dirs = (root / "train", root / "val")
    official = all(d.is_dir() for d in split_dirs)
    parts = split_dirs if official else (root,)
    classes = tuple(d.name for d in _class_dirs(parts[0]))
    if len(classes) < 2:
        raise DatasetPathError(
            f"{parts[0]} holds {len(classes)} class folder(s), need at least 2; expected {FOLDERS_LAYOUT}"
        )
    index = {name: i for i, name in enumerate(classes)}
    files: list[Path] = []
    labels: list[int] = []
    is_test: list[bool] = []
    for part_index, part in enumerate(parts):
        for class_dir in _class_dirs(part):
            if class_dir.name not in index:
                raise DatasetFormatError(f"{class_dir}: class {class_dir.name!r} does not occur in {parts[0]}")
            images = _images(class_dir)
            if not images and part_index == 0:
                raise DatasetFormatError(f"{class_dir}: class folder holds no .jpg/.jpeg/.png image")
            files.extend(images)
            labels.extend([index[class_dir.name]] * len(images))
            is_test.extend([part_index == 1] * len(images))
    x = np.stack([read_image(p, size) for p in files])
    y = np.array(labels, dtype=np.int64)
    return x, y, (np.array(is_test, dtype=bool) if official else None), classes
