"""Decoding one image file into a fixed-size uint8 CHW array with Pillow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import DatasetFormatError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def is_image_name(path: Path) -> bool:
    """Whether a file name has one of the image suffixes the loaders read."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """RGB pixels of `path` resized to `size` = (height, width): uint8 of shape (3, height, width)."""
    try:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
            # Bilinear with Pillow's support scaling antialiases when shrinking, and is deterministic.
            rgb = rgb.resize((size[1], size[0]), Image.Resampling.BILINEAR)
            pixels = np.asarray(rgb, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise DatasetFormatError(f"{path}: not a readable image ({exc})") from exc
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
