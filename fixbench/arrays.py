"""Dataset splits as `.npz` files: numpy arrays only, no pickles, byte-identical for equal data.

A split holds `x` (float32, the model's input layout), `y` (int64 labels) and, when the
dataset declares a sensitive attribute, `group` (int64). `np.savez` stamps the current time
into its zip entries, so equal data would give different digests; we write the zip ourselves
with a fixed timestamp so that a split's sha256 depends on its contents only.
"""

from __future__ import annotations

import io
import mmap
import os
import struct
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
    return _as_split(load_npz(source))


def map_split(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """As load_split, for a split file whose bytes must not all be held in memory (the
    evaluator's test split): each uncompressed member (what npz_bytes writes) is a read-only
    memory map of the file instead of a copy on the heap, so a consumer that works in batches
    holds one batch at a time; the pages it reads are the file's page cache, which the kernel
    takes back under pressure. Compressed members are read as load_npz reads them. The same
    checks as load_npz: .npy members only, no object arrays, no member that declares more than
    it holds, MAX_SPLIT_BYTES in all. The file must not change while mapped (a cache blob is
    immutable; a truncated one would fault on access)."""
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise SplitFormatError(f"cannot open split {path!s}: {exc.strerror}") from exc
    try:
        with fh:
            _check_members(fh)
            fh.seek(0)
            size = os.fstat(fh.fileno()).st_size
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
            arrays = {}
            with zipfile.ZipFile(fh) as zf:
                for info in zf.infolist():
                    name = info.filename[: -len(".npy")]
                    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1 or mapped is None:
                        with zf.open(info) as member:
                            arrays[name] = np.lib.format.read_array(member, allow_pickle=False)
                        continue
                    arrays[name] = _mapped_member(fh, mapped, info)
        return _as_split(arrays)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, struct.error) as exc:
        if isinstance(exc, SplitFormatError):
            raise
        raise SplitFormatError(f"{path} is not a readable .npz split: {exc}") from exc


_RELEASE_MARGIN = 4 * 1024 * 1024


def release(part: np.ndarray) -> None:
    """Drops the pages of `part` (a contiguous slice of an array from map_split) from this
    process's memory once a batch is done with them: a pass over a mapped split then holds
    one batch's pages at a time instead of every page it touched. The data stays correct: a
    later access reads the pages in again from the file. Does nothing for other arrays."""
    mapped = part.base
    while isinstance(mapped, (np.ndarray, memoryview)):  # views of the flat array over the map
        mapped = mapped.base if isinstance(mapped, np.ndarray) else mapped.obj
    if not isinstance(mapped, mmap.mmap) or not part.flags.c_contiguous or part.nbytes == 0:
        return
    start = part.__array_interface__["data"][0] - np.frombuffer(mapped, np.uint8, 1).__array_interface__["data"][0]
    # From a margin before the part: the page cache may hold the file in large folios (up to
    # 2 MiB), and a fault maps a whole folio, so the next batch's first fault maps again the
    # tail of this one's range; dropping the margin each time unmaps those pages again.
    first = max(0, start - _RELEASE_MARGIN) // mmap.PAGESIZE * mmap.PAGESIZE
    end = min(len(mapped), start + part.nbytes)
    try:
        mapped.madvise(mmap.MADV_DONTNEED, first, end - first)
    except (OSError, ValueError, AttributeError):  # no madvise here: the pages stay until reclaimed
        pass


def _mapped_member(fh, mapped: mmap.mmap, info: zipfile.ZipInfo) -> np.ndarray:
    """A read-only array over a stored (uncompressed) member's bytes in `mapped`."""
    fh.seek(info.header_offset)
    local = fh.read(30)  # the local file header: its name and extra lengths place the data
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise SplitFormatError(f"split member {info.filename[:100]!r} has no local header")
    name_len, extra_len = struct.unpack("<HH", local[26:30])
    start = info.header_offset + 30 + name_len + extra_len
    fh.seek(start)
    major, _ = np.lib.format.read_magic(fh)
    read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read_header(fh)
    if dtype.hasobject:
        raise SplitFormatError(f"split member {info.filename[:100]!r} holds objects, which are not read with "
                               "allow_pickle=False: only plain arrays are allowed")
    offset = fh.tell()
    count = int(np.prod(shape, dtype=object))
    if offset + count * dtype.itemsize > start + info.file_size or offset + count * dtype.itemsize > len(mapped):
        raise SplitFormatError(f"split member {info.filename[:100]!r} declares shape {shape} but holds less")
    flat = np.frombuffer(mapped, dtype=dtype, count=count, offset=offset)
    return flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)


def _as_split(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
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
