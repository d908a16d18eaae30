"""A digest-keyed blob store on disk. Writers stream into a private temp file, hashing as
they go, and rename it into place only after the digest and size match: readers never see a
half-written blob, and concurrent writers of the same blob both succeed (the rename is
atomic and the contents are identical)."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import uuid
from pathlib import Path
from typing import BinaryIO, Iterator

from fixbench.artifacts.digest import CHUNK_BYTES, check_digest, short
from fixbench.v1.common_pb2 import Digest


class BlobTooLarge(ValueError):
    """A blob over the store's size limit."""


class BlobCorrupt(ValueError):
    """Bytes that do not match their announced digest or size."""


class DiskStore:
    def __init__(self, root: str | Path, max_blob_bytes: int = 2 * 1024**3):
        self.root = Path(root)
        self.max_blob_bytes = max_blob_bytes
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def path(self, digest: Digest) -> Path:
        check_digest(digest)
        return self.root / "blobs" / digest.sha256[:2] / digest.sha256

    def has(self, digest: Digest) -> bool:
        try:
            return self.path(digest).stat().st_size == digest.size_bytes
        except FileNotFoundError:
            return False

    def writer(self, digest: Digest) -> "BlobWriter":
        check_digest(digest)
        if digest.size_bytes > self.max_blob_bytes:
            raise BlobTooLarge(
                f"blob {short(digest)} exceeds the store limit of {self.max_blob_bytes} bytes"
            )
        return BlobWriter(self, digest)

    def put_bytes(self, data: bytes) -> Digest:
        digest = Digest(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        if not self.has(digest):
            with self.writer(digest) as w:
                w.write(data)
        return digest

    def get_bytes(self, digest: Digest) -> bytes:
        return self.path(digest).read_bytes()

    def chunks(self, digest: Digest, offset: int = 0, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
        """Yields (offset, bytes); raises FileNotFoundError for an unknown blob."""
        with open(self.path(digest), "rb") as fh:
            fh.seek(offset)
            pos = offset
            while chunk := fh.read(chunk_bytes):
                yield pos, chunk
                pos += len(chunk)


class BlobWriter:
    """Context manager: write() chunks, then commit on clean exit (verify + atomic rename).

    File writes run in a helper thread while the caller hashes and receives the next chunk
    (hashing and writing both release the GIL), so the two overlap on a multi-core machine.
    """

    _QUEUE_CHUNKS = 8

    def __init__(self, store: DiskStore, digest: Digest):
        self.store = store
        self.digest = digest
        self.tmp = store.root / "tmp" / f"{digest.sha256}.{uuid.uuid4().hex}"
        self._fh: BinaryIO = open(self.tmp, "wb")
        self._hash = hashlib.sha256()
        self.received = 0
        self._queue: queue.Queue = queue.Queue(maxsize=self._QUEUE_CHUNKS)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="blob-writer", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._fh.write(data)
                except BaseException as exc:  # surfaced by write()/commit() in the caller
                    self._error = exc

    def write(self, data: bytes) -> None:
        if self._error is not None:
            raise self._error
        self.received += len(data)
        if self.received > self.digest.size_bytes:
            raise BlobCorrupt(
                f"received more than the announced {self.digest.size_bytes} bytes for {short(self.digest)}"
            )
        self._hash.update(data)
        self._queue.put(data)

    def _join(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def commit(self) -> Path:
        self._join()
        if self._error is not None:
            raise self._error
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        if self.received != self.digest.size_bytes:
            raise BlobCorrupt(
                f"stream ended after {self.received} of {self.digest.size_bytes} bytes for {short(self.digest)}"
            )
        actual = self._hash.hexdigest()
        if actual != self.digest.sha256:
            raise BlobCorrupt(f"bytes hash to sha256:{actual[:12]}, not the announced {short(self.digest)}")
        final = self.store.path(self.digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(self.tmp, final)
        return final

    def abort(self) -> None:
        self._join()
        if not self._fh.closed:
            self._fh.close()
        self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> "BlobWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.commit()
        except BaseException:
            self.abort()
            raise
