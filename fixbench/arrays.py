"""Dataset splits as `.npz` files: numpy arrays only, no pickles, byte-identical for equal data.

A split holds `x` (float32, the model's input layout), `y` (int64 labels) and, when the
dataset declares a sensitive attribute, `group` (int64). `np.savez` stamps the current time
into its zip entries, so equal data would give different digests; we write the zip ourselves
with a fixed timestamp so that a split's sha256 depends on its contents only.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
# Bytes a split may expand to in memory. The zip directory states each member's size, and
# zipfile stops reading there, so summing them bounds what loading can allocate: a
# compressed "zip bomb" or a header declaring a huge shape is refused before any allocation.
MAX_SPLIT_BYTES = int(os.environ.get("FIXBENCH_MAX_SPLIT_BYTES", str(4 * 1024**3)))


@dataclass(frozen=True)
class Split:
    """One split: inputs `x` (float32), labels `y` (int64), sensitive-attribute codes `group`."""

    x: np.ndarray
    y: np.ndarray
    group: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays for `save_npz` (`group` only when present)."""
        out = {"x": self.x, "y": self.y}
        if self.group is not None:
            out["group"] = self.group
        return out

    def subset(self, mask_or_index) -> Split:
        return Split(self.x[mask_or_index], self.y[mask_or_index], None if self.group is None else self.group[mask_or_index])


class SplitFormatError(ValueError):
    """A file that is not a readable split (.npz of plain arrays)."""


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    """Serialises arrays (sorted by name) into deterministic npz bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            arr = np.ascontiguousarray(arrays[name])
            if arr.dtype == object:
                raise SplitFormatError(f"array {name!r} has dtype object; only plain arrays are allowed")
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
    return buf.getvalue()


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Writes arrays to `path` atomically (temp file + rename) and returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(npz_bytes(arrays))
    tmp.replace(path)
    return path


def load_npz(source: str | Path | bytes) -> dict[str, np.ndarray]:
    """Reads a split; refuses pickled objects. Raises SplitFormatError on anything else."""
    try:
        fh = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else open(source, "rb")
    except OSError as exc:
        raise SplitFormatError(f"cannot open split {source!s}: {exc.strerror}") from exc
    try:
        with fh:
            _check_members(fh)
            fh.seek(0)
            with np.load(fh, allow_pickle=False) as npz:
                return {name: npz[name] for name in npz.files}
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, SplitFormatError):
            raise
        where = "bytes" if isinstance(source, (bytes, bytearray)) else str(source)
        raise SplitFormatError(f"{where} is not a readable .npz split: {exc}") from exc


def _check_members(fh) -> None:
    """Every member is an .npy array (numpy would hand other members back as raw bytes) and
    together they expand to at most MAX_SPLIT_BYTES."""
    with zipfile.ZipFile(fh) as zf:
        total = 0
        for info in zf.infolist():
            if not info.filename.endswith(".npy"):
                raise SplitFormatError(f"split member {info.filename[:100]!r} is not a .npy array")
            with zf.open(info) as member:
                if member.read(6) != b"\x93NUMPY":
                    raise SplitFormatError(f"split member {info.filename[:100]!r} is not a .npy array (bad magic)")
                member.seek(0)
                major, _ = np.lib.format.read_magic(member)
                read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
                shape, _, dtype = read_header(member)
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if declared > info.file_size:
                    # numpy would allocate the declared size before finding the data missing
                    raise SplitFormatError(f"split member {info.filename[:100]!r} declares shape {shape} "
                                           f"({declared} bytes) but holds {info.file_size} bytes")
            total += info.file_size
            if total > MAX_SPLIT_BYTES:
                raise SplitFormatError(f"split expands to more than {MAX_SPLIT_BYTES} bytes "
                                       "(FIXBENCH_MAX_SPLIT_BYTES); refusing to load it")


def load_split(source: str | Path | bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Reads a split and checks its shape: returns (x float32, y int64, group int64 or None)."""
    arrays = load_npz(source)
    missing = {"x", "y"} - arrays.keys()
    if missing:
        raise SplitFormatError(f"split lacks array(s) {sorted(missing)}; it has {sorted(arrays)}")
    x, y = arrays["x"], arrays["y"]
    if len(x) != len(y):
        raise SplitFormatError(f"split has {len(x)} inputs but {len(y)} labels")
    group = arrays.get("group")
    if group is not None and len(group) != len(y):
        raise SplitFormatError(f"split has {len(y)} labels but {len(group)} group values")
    return (
        x.astype(np.float32, copy=False),
        y.astype(np.int64, copy=False),
        None if group is None else group.astype(np.int64, copy=False),
    )
