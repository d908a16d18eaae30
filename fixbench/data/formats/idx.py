"""MNIST's IDX format (plain or gzip): a big-endian header — two zero bytes, a type code, the
number of dimensions — then one big-endian uint32 per dimension, then the data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from ..errors import DatasetFormatError, DatasetPathError

_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
MNIST_LAYOUT = (
    "a folder holding MNIST's four IDX files train-images-idx3-ubyte, train-labels-idx1-ubyte, "
    "t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte (each may end in .gz)"
)


def _read_bytes(path: Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
            fh.seek(0)
            if head == b"\x1f\x8b":
                return gzip.GzipFile(fileobj=fh).read()
            return fh.read()
    except (OSError, EOFError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise DatasetPathError(f"IDX file {path} does not exist") from exc
        raise DatasetFormatError(f"{path}: cannot be read as (gzip) IDX: {exc}") from exc


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file's array in native byte order; gzip is detected from the magic bytes."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_TYPES:
        raise DatasetFormatError(f"{path}: not an IDX file (bad magic number {data[:4].hex()})")
    dtype = _IDX_TYPES[data[2]]
    ndim = data[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(data) < header:
        raise DatasetFormatError(f"{path}: IDX header declares {ndim} dimensions but is truncated")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise DatasetFormatError(
            f"{path}: IDX header declares shape {shape} ({expected} bytes) but {len(data) - header} bytes follow"
        )
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find(root: Path, name: str) -> Path | None:
    for candidate in (root / name, root / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def read_mnist(root: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MNIST from its IDX files: (x uint8 (n, 1, 28, 28), y int64, official_test mask)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetPathError(f"MNIST path {root} is not a folder; expected {MNIST_LAYOUT}")
    files = {key: _find(root, name) for key, name in MNIST_FILES.items()}
    missing = [MNIST_FILES[k] for k, v in files.items() if v is None]
    if missing:
        raise DatasetPathError(f"MNIST folder {root} lacks {missing}; expected {MNIST_LAYOUT}")
    parts = []
    for kind in ("train", "test"):
        images_file, labels_file = files[f"{kind}_images"], files[f"{kind}_labels"]
        images, labels = read_idx(images_file), read_idx(labels_file)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DatasetFormatError(
                f"{images_file}: expected uint8 images of shape (n, rows, cols), got {images.shape}"
            )
        if labels.ndim != 1 or len(labels) != len(images):
            raise DatasetFormatError(f"{labels_file}: expected {len(images)} labels, got shape {labels.shape}")
        if len(labels) and labels.max() > 9:
            raise DatasetFormatError(f"{labels_file}: label {int(labels.max())} is not a digit")
        parts.append((images, labels))
    (train_x, train_y), (test_x, test_y) = parts
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetFormatError(f"{root}: train images {train_x.shape[1:]} and test images {test_x.shape[1:]} differ")
    x = np.concatenate([train_x, test_x])[:, None]
    y = np.concatenate([train_y, test_y]).astype(np.int64)
    official_test = np.r_[np.zeros(len(train_y), bool), np.ones(len(test_y), bool)]
    return x, y, official_test
