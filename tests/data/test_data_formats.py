"""Readers of published formats, on tiny files written here, and their errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixbench.data import DatasetFormatError, DatasetPathError, get_dataset, load_splits
from fixbench.data.formats import (
    parse_utkface_name,
    read_cifar10_batch,
    read_class_folders,
    read_idx,
    read_svmlight_bow,
    read_utkface,
)

# --- MNIST IDX ---------------------------------------------------------------------------------


def _idx_bytes(array: np.ndarray) -> bytes:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(root: Path, n_train_per_class: int, n_test_per_class: int, gz: bool) -> None:
    rng = np.random.default_rng(0)
    for prefix, per_class in (("train", n_train_per_class), ("t10k", n_test_per_class)):
        labels = np.repeat(np.arange(10), per_class).astype(np.uint8)
        images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels  # marks each image with its label, to check pairing
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{prefix}-{kind}-ubyte"
            data = _idx_bytes(array)
            if gz:
                (root / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
            else:
                (root / name).write_bytes(data)


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_plain_and_gzip(tmp_path: Path, gz: bool) -> None:
    _write_mnist(tmp_path, n_train_per_class=10, n_test_per_class=4, gz=gz)
    splits = load_splits("mnist", seed=0, path=tmp_path)
    # Official division kept: 100 training digits → 90/10, 40 test digits → 20/20.
    assert splits.sizes() == {"train": 90, "valid": 10, "repair": 20, "test": 20}
    for _, split in splits:
        assert split.x.shape[1:] == (1, 28, 28)
        assert np.array_equal(np.rint(split.x[:, 0, 0, 0] * 255).astype(np.int64), split.y)
    assert np.bincount(splits.valid.y, minlength=10).tolist() == [1] * 10


def test_read_idx_shapes_and_dtypes(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "a").write_bytes(_idx_bytes(array))
    assert np.array_equal(read_idx(tmp_path / "a"), array)
    ints = np.array([-5, 70000], dtype=">i4")
    (tmp_path / "b").write_bytes(struct.pack(">BBBBI", 0, 0, 0x0C, 1, 2) + ints.tobytes())
    assert read_idx(tmp_path / "b").tolist() == [-5, 70000]


@pytest.mark.parametrize(
    "content",
    [b"not an idx file at all", struct.pack(">BBBBI", 0, 0, 0x08, 1, 10) + b"\x00" * 3, b"\x1f\x8bbroken"],
)
def test_bad_idx_names_the_file(tmp_path: Path, content: bytes) -> None:
    (tmp_path / "weird-idx").write_bytes(content)
    with pytest.raises(DatasetFormatError, match="weird-idx"):
        read_idx(tmp_path / "weird-idx")


def test_mnist_bad_label_and_missing_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetPathError, match="train-images-idx3-ubyte"):
        load_splits("mnist", seed=0, path=tmp_path)
    _write_mnist(tmp_path, 10, 4, gz=False)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(_idx_bytes(np.full(40, 12, dtype=np.uint8)))
    with pytest.raises(DatasetFormatError, match="t10k-labels-idx1-ubyte.*12"):
        load_splits("mnist", seed=0, path=tmp_path)


def test_missing_path_names_path_and_layout(tmp_path: Path) -> None:
    for name in ("mnist", "cifar10", "cifar10s", "utkface", "imagenet", "reuters"):
        with pytest.raises(DatasetPathError, match="path"):
            load_splits(name, seed=0)
        nowhere = tmp_path / f"no-{name}"
        with pytest.raises(DatasetPathError) as info:
            load_splits(name, seed=0, path=nowhere)
        assert str(nowhere) in str(info.value)
        assert get_dataset(name).path_layout in str(info.value)


# --- CIFAR-10 binary -----------------------------------------------------------------------------


def _cifar_records(labels: list[int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    out = bytearray()
    for label in labels:
        planes = rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8)
        planes[0, 0, 0], planes[1, 0, 0], planes[2, 0, 0] = label, 100 + label, 200 + label
        out += bytes([label]) + planes.tobytes()
    return bytes(out)


def _write_cifar(root: Path, per_class_train: int = 4, per_class_test: int = 2) -> Path:
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for b in (1, 2):
        labels = [c for c in range(10) for _ in range(per_class_train // 2)]
        (folder / f"data_batch_{b}.bin").write_bytes(_cifar_records(labels, b))
    test_labels = [c for c in range(10) for _ in range(per_class_test)]
    (folder / "test_batch.bin").write_bytes(_cifar_records(test_labels, 9))
    return folder


def test_cifar10_record_layout(tmp_path: Path) -> None:
    folder = _write_cifar(tmp_path)
    x, y = read_cifar10_batch(folder / "test_batch.bin")
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x[:, 0, 0, 0], y) and np.array_equal(x[:, 2, 0, 0], y + 200)


def test_cifar10_splits_from_binary_files(tmp_path: Path) -> None:
    _write_cifar(tmp_path, per_class_train=10, per_class_test=2)
    # The parent of cifar-10-batches-bin/ is accepted too.
    splits = load_splits("cifar10", seed=0, path=tmp_path)
    assert splits.sizes() == {"train": 90, "valid": 10, "repair": 10, "test": 10}
    for _, split in splits:
        assert np.array_equal(np.rint(split.x[:, 1, 0, 0] * 255).astype(np.int64), split.y + 100)


def test_cifar10s_greys_half_and_skews_training(tmp_path: Path) -> None:
    _write_cifar(tmp_path, per_class_train=40, per_class_test=4)
    splits = load_splits("cifar10s", seed=0, path=tmp_path)
    for name, split in splits:
        grey = split.group == 0
        assert np.array_equal(split.x[grey, 0], split.x[grey, 1]) and np.array_equal(split.x[grey, 1], split.x[grey, 2])
        assert not np.array_equal(split.x[~grey, 0], split.x[~grey, 1]), name
    for c in range(10):
        train_groups = splits.train.group[splits.train.y == c]
        majority = 1 if c % 2 == 0 else 0
        assert (train_groups == majority).mean() >= 0.9
        test_groups = splits.repair.group[splits.repair.y == c]
        assert (test_groups == 0).sum() == (test_groups == 1).sum()


@pytest.mark.parametrize(
    ("content", "pattern"),
    [(b"\x00" * 3000, "3073-byte"), (bytes([11]) + b"\x00" * 3072, "label 11")],
)
def test_bad_cifar_batch_names_the_file(tmp_path: Path, content: bytes, pattern: str) -> None:
    folder = _write_cifar(tmp_path)
    (folder / "data_batch_2.bin").write_bytes(content)
    with pytest.raises(DatasetFormatError, match=rf"data_batch_2\.bin.*{pattern}"):
        load_splits("cifar10", seed=0, path=folder)


def test_cifar_without_batches_or_test_batch(tmp_path: Path) -> None:
    with pytest.raises(DatasetPathError, match="data_batch"):
        load_splits("cifar10", seed=0, path=tmp_path)
    folder = _write_cifar(tmp_path)
    (folder / "test_batch.bin").unlink()
    with pytest.raises(DatasetPathError, match="test_batch.bin"):
        load_splits("cifar10", seed=0, path=folder)


# --- UTKFace -------------------------------------------------------------------------------------


def _write_face(path: Path, colour: tuple[int, int, int]) -> None:
    Image.new("RGB", (20, 24), colour).save(path, format="JPEG", quality=95)


def _write_utkface(root: Path, per_cell: int = 8) -> None:
    root.mkdir(exist_ok=True)
    for gender in (0, 1):
        for race in (0, 1, 2, 3):
            for i in range(per_cell):
                name = f"{20 + i}_{gender}_{race}_2017011617452{gender}{race}{i:02d}.jpg.chip.jpg"
                _write_face(root / name, (40 * race, 200 * gender, 10 * i))


def test_utkface_labels_groups_and_resize(tmp_path: Path) -> None:
    _write_utkface(tmp_path)
    _write_face(tmp_path / "39_1_20170116174525125.jpg.chip.jpg", (1, 2, 3))  # race missing: skipped
    (tmp_path / "README.txt").write_text("not part of the set")
    splits = load_splits("utkface", seed=0, path=tmp_path)
    assert sum(splits.sizes().values()) == 64
    for _, split in splits:
        assert split.x.shape[1:] == (3, 32, 32)
        # Green encodes gender, red encodes race (JPEG is lossy: compare loosely).
        assert np.array_equal(split.x[:, 1, 16, 16] > 0.5, split.y == 1)
        assert np.allclose(split.x[:, 0, 16, 16] * 255 / 40, split.group, atol=0.2)


def test_utkface_name_parsing() -> None:
    assert parse_utkface_name(Path("26_1_3_20170119.jpg.chip.jpg")) == (26, 1, 3)
    for bad in ("26_2_3_20170119.jpg", "26_1_7_20170119.jpg", "face.jpg"):
        with pytest.raises(DatasetFormatError, match=bad.split(".")[0]):
            parse_utkface_name(Path(bad))


def test_utkface_bad_name_and_bad_image(tmp_path: Path) -> None:
    _write_utkface(tmp_path, per_cell=1)
    _write_face(tmp_path / "holiday.jpg", (0, 0, 0))
    with pytest.raises(DatasetFormatError, match="holiday.jpg"):
        load_splits("utkface", seed=0, path=tmp_path)
    (tmp_path / "holiday.jpg").unlink()
    (tmp_path / "30_0_1_20170101000000000.jpg").write_bytes(b"this is not a jpeg")
    with pytest.raises(DatasetFormatError, match="30_0_1_20170101000000000.jpg"):
        read_utkface(tmp_path)


def test_utkface_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetPathError, match="holds no images"):
        load_splits("utkface", seed=0, path=tmp_path)


# --- ImageNet-style class folders ----------------------------------------------------------------


def _write_classes(root: Path, classes: dict[str, int], suffix: str = ".png") -> None:
    for index, (name, count) in enumerate(sorted(classes.items())):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            Image.new("RGB", (9, 7), (60 * index, i, 0)).save(root / name / f"img{i}{suffix}")


def test_class_folders_discover_classes(tmp_path: Path) -> None:
    _write_classes(tmp_path, {"n02": 14, "n01": 14, "n03": 14})
    (tmp_path / "n01" / "notes.txt").write_text("ignored")
    splits = load_splits("imagenet", seed=0, path=tmp_path)
    assert splits.spec.class_names == ("n01", "n02", "n03") and splits.spec.num_classes == 3
    assert get_dataset("imagenet").num_classes == 1000
    assert sum(splits.sizes().values()) == 42
    for _, split in splits:
        assert split.x.shape[1:] == (3, 32, 32)
        assert np.allclose(split.x[:, 0, 10, 10] * 255, 60 * split.y, atol=1)


def test_class_folders_official_division(tmp_path: Path) -> None:
    _write_classes(tmp_path / "train", {"a": 10, "b": 10}, suffix=".jpg")
    _write_classes(tmp_path / "val", {"a": 2, "b": 2}, suffix=".jpg")
    x, y, official_test, classes = read_class_folders(tmp_path)
    assert classes == ("a", "b") and official_test is not None and official_test.sum() == 4
    splits = load_splits("imagenet", seed=0, path=tmp_path)
    assert splits.sizes() == {"train": 18, "valid": 2, "repair": 2, "test": 2}


def test_class_folder_errors(tmp_path: Path) -> None:
    _write_classes(tmp_path / "train", {"a": 3, "b": 3})
    _write_classes(tmp_path / "val", {"a": 1, "zebra": 1})
    with pytest.raises(DatasetFormatError, match="zebra"):
        read_class_folders(tmp_path)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a").mkdir(parents=True)
    (tmp_path / "other" / "b").mkdir(parents=True)
    with pytest.raises(DatasetFormatError, match="holds no"):
        read_class_folders(tmp_path / "other")
    (tmp_path / "other" / "a" / "broken.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "other" / "b" / "fine.png").write_bytes(b"")
    with pytest.raises(DatasetFormatError, match="broken.png"):
        read_class_folders(tmp_path / "other")


# --- Reuters svmlight ----------------------------------------------------------------------------


def _svm_lines(n: int, seed: int, topics: int = 46) -> str:
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        topic = i % topics
        words = sorted(set(rng.integers(0, 1200, size=6).tolist()) | {topic})
        lines.append(f"{topic} " + " ".join(f"{w}:{int(rng.integers(1, 4))}" for w in words))
    return "\n".join(lines) + "\n"


def test_svmlight_bag_of_words(tmp_path: Path) -> None:
    file = tmp_path / "bow.svmlight"
    file.write_text("3 0:2 5:1 1500:4\n45 999:1\n")
    x, y = read_svmlight_bow(file, num_words=1000, num_classes=46)
    assert x.shape == (2, 1000) and x.dtype == np.float32 and y.tolist() == [3, 45]
    assert np.flatnonzero(x[0]).tolist() == [0, 5]  # word 1500 is past the vocabulary cap
    assert np.flatnonzero(x[1]).tolist() == [999]


def test_reuters_from_file_and_folder(tmp_path: Path) -> None:
    (tmp_path / "all.svmlight").write_text(_svm_lines(46 * 14, 0))
    splits = load_splits("reuters", seed=0, path=tmp_path / "all.svmlight")
    assert sum(splits.sizes().values()) == 46 * 14
    assert set(np.unique(splits.train.x)) == {0.0, 1.0}
    folder = tmp_path / "split"
    folder.mkdir()
    (folder / "train.svmlight").write_text(_svm_lines(46 * 10, 1))
    (folder / "test.svmlight").write_text(_svm_lines(46 * 2, 2))
    splits = load_splits("reuters", seed=0, path=folder)
    assert splits.sizes() == {"train": 414, "valid": 46, "repair": 46, "test": 46}


@pytest.mark.parametrize(
    ("content", "pattern"),
    [("46 1:1\n", "label 46"), ("2.5 1:1\n", "label 2.5"), ("this is prose, not svmlight\n", "svmlight")],
)
def test_bad_svmlight_names_the_file(tmp_path: Path, content: str, pattern: str) -> None:
    file = tmp_path / "odd.svmlight"
    file.write_text(content)
    with pytest.raises(DatasetFormatError, match=rf"odd\.svmlight.*{pattern}"):
        load_splits("reuters", seed=0, path=file)


def test_reuters_folder_without_test_file(tmp_path: Path) -> None:
    (tmp_path / "train.svmlight").write_text(_svm_lines(50, 0))
    with pytest.raises(DatasetPathError, match="test.svmlight"):
        load_splits("reuters", seed=0, path=tmp_path)
