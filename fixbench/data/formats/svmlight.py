"""Bags of words in the svmlight / libsvm text format (`label index:value ...` per line), read
with scikit-learn's parser. Feature index k is word k (zero-based), words ranked by frequency
as in Keras's Reuters; words at index >= `num_words` are dropped, like Keras's `num_words`.
Values become 0/1 presence, the input of the Keras Reuters MLP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_svmlight_file

from ..errors import DatasetFormatError, DatasetPathError


def read_svmlight_bow(path: str | Path, num_words: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 0/1 of shape (n, num_words), y int64 in [0, num_classes)) from one file."""
    path = Path(path)
    if not path.is_file():
        raise DatasetPathError(f"svmlight file {path} does not exist")
    try:
        matrix, labels = load_svmlight_file(str(path), zero_based=True, dtype=np.float64)
    except (ValueError, UnicodeDecodeError, IndexError) as exc:
        raise DatasetFormatError(f"{path}: not a svmlight/libsvm file ({exc})") from exc
    if matrix.shape[0] == 0:
        raise DatasetFormatError(f"{path}: holds no samples")
    if not np.all(labels == np.round(labels)) or labels.min() < 0 or labels.max() >= num_classes:
        bad = labels[(labels != np.round(labels)) | (labels < 0) | (labels >= num_classes)][0]
        raise DatasetFormatError(f"{path}: label {float(bad):g} is not a topic id in [0, {num_classes})")
    if matrix.data.size and matrix.data.min() < 0:
        raise DatasetFormatError(f"{path}: negative word count; a bag of words holds counts >= 0")
    matrix = matrix.tocsc()[:, :num_words].tocsr()
    x = np.zeros((matrix.shape[0], num_words), dtype=np.float32)
    rows, cols = matrix.nonzero()
    x[rows, cols] = 1.0
    return x, labels.astype(np.int64)
