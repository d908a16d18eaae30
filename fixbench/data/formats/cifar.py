"""CIFAR-10's binary version: `data_batch_{1..5}.bin` and `test_batch.bin`, each a run of
3,073-byte records — one label byte, then 32x32 red, green and blue planes (row-major)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DatasetFormatError, DatasetPathError

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
RECORD_BYTES = 1 + 3 * 32 * 32
CIFAR10_LAYOUT = (
    "a folder (e.g. cifar-10-batches-bin/) holding data_batch_1.bin ... data_batch_5.bin and "
    "test_batch.bin: CIFAR-10's binary version, 3,073-byte records"
)


def read_cifar10_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: (x uint8 (n, 3, 32, 32), y int64)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise DatasetPathError(f"CIFAR-10 batch {path} does not exist") from exc
    if len(data) == 0 or len(data) % RECORD_BYTES:
        raise DatasetFormatError(
            f"{path}: {len(data)} bytes is not a whole number of {RECORD_BYTES}-byte CIFAR-10 records"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= len(CIFAR10_CLASSES):
        bad = int(np.flatnonzero(labels >= len(CIFAR10_CLASSES))[0])
        raise DatasetFormatError(f"{path}: record {bad} has label {labels[bad]}, not a CIFAR-10 class (0-9)")
    return records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels


def _batch_dir(root: Path) -> Path:
    # Accept the folder that holds the batches or the one the archive unpacks into.
    for candidate in (root, root / "cifar-10-batches-bin"):
        if candidate.is_dir() and any(candidate.glob("data_batch_*.bin")):
            return candidate
    raise DatasetPathError(f"CIFAR-10 path {root} holds no data_batch_*.bin; expected {CIFAR10_LAYOUT}")


def read_cifar10(root: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All batches: (x uint8 (n, 3, 32, 32), y int64, official_test mask from test_batch.bin)."""
    folder = _batch_dir(Path(root))
    test_file = folder / "test_batch.bin"
    if not test_file.is_file():
        raise DatasetPathError(f"CIFAR-10 folder {folder} lacks test_batch.bin; expected {CIFAR10_LAYOUT}")
    # Sorted by batch number so that the pool (and so the splits) never depends on listing order.
    train_files = sorted(folder.glob("data_batch_*.bin"), key=lambda p: (len(p.name), p.name))
    xs, ys, test_mask = [], [], []
    for file in [*train_files, test_file]:
        x, y = read_cifar10_batch(file)
        xs.append(x)
        ys.append(y)
        test_mask.append(np.full(len(y), file == test_file))
    return np.concatenate(xs), np.concatenate(ys), np.concatenate(test_mask)
