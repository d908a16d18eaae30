"""A digest-keyed blob store on disk. Writers stream into a private temp file, hashing as
they go, and rename it into place only after the digest and size match: readers never see a
half-written blob, and concurrent writers of the same blob both succeed (the rename is
atomic and the contents are identical). A stored blob is verified (hashed) before it is
first trusted and again whenever its file changes; one that no longer matches its digest is
moved to root/quarantine, so the store reports it absent and takes a fresh upload.

Two ways in without a stream, for processes that share the store's filesystem (issue 23):
`adopt` takes a file a caller placed in root/staging as a blob (the store's side of the
Adopt RPC), and `link_in` takes another store's blob file into this one (a client's cache
beside the store). Adopt hashes the bytes it takes, after taking them, as a stream would;
link_in takes the store's seal (fixbench.artifacts.seal) on the very inode it linked as the
store's verification, and hashes a blob that carries none."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import re
import shutil
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from fixbench.artifacts.digest import CHUNK_BYTES, check_digest, sha256_of_mapped, short
from fixbench.artifacts.seal import SEALED_MTIME_NS, is_sealed, seal
from fixbench.v1.common_pb2 import Digest

log = logging.getLogger("fixbench.artifacts")


class BlobTooLarge(ValueError):
    """A blob over the store's size limit."""


class BlobCorrupt(ValueError):
    """Bytes that do not match their announced digest or size."""


class StoreFull(OSError):
    """No room for a blob: the store's quota (max_total_bytes) or the disk itself is full."""


class StagingNameError(ValueError):
    """A staged file's name that is not one plain file name inside the staging folder."""


class StagedFileMissing(FileNotFoundError):
    """No file of that name is staged."""


class StagedFileRefused(ValueError):
    """A staged entry the store will not take as a blob: not a regular file, or a file with
    another link (whoever holds that link could change the blob after it was verified)."""


# The folder under a store's root where callers that share its filesystem place files for
# Adopt; the store creates it and takes (moves) every file it is asked to adopt.
STAGING = "staging"
# A staged name is one plain file name: letters, digits, ".", "_", "-", not starting with a
# dot (so never "." or ".."), no separator, at most 200 characters. \A…\Z as in digest.py.
_STAGED_NAME = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,199}\Z")
# link() errors after which a hashing copy is made instead: another filesystem, a filesystem
# or a policy without hard links (protected_hardlinks refuses links to others' files), too
# many links, a read-only mount (compose mounts the store's volume read-only into the evaluator).
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EACCES, errno.EROFS)


_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
# Temp files older than this at start-up were left by a killed writer: no writer lives that long.
_STALE_TMP_SECONDS = 6 * 3600


class DiskStore:
    """Blobs under root/blobs, writes staged in root/tmp.

    `max_total_bytes` caps the bytes of all blobs plus those being written (a quota: a
    writer reserves its announced size up front, so concurrent uploads cannot overshoot it);
    independently, a blob is refused when the file system has less free space than its size.

    `durable`: fsync each blob before it is renamed into place (the store: an acknowledged
    upload survives a crash), and seal it (fixbench.artifacts.seal), so that any process
    holding the file takes it as verified without hashing it again. A client's cache passes
    False: it seals nothing, so a file it wrote is trusted only by the process that hashed it
    (the verified stamps live in memory); a blob torn by a crash is hashed, found corrupt,
    quarantined and fetched again, and the fsync buys nothing. A blob the cache hard-linked
    from a durable store is the store's inode and carries the store's seal.
    """

    def __init__(self, root: str | Path, max_blob_bytes: int = 2 * 1024**3, max_total_bytes: int | None = None,
                 durable: bool = True):
        self.root = Path(root)
        self.durable = durable
        self.max_blob_bytes = max_blob_bytes
        self.max_total_bytes = max_total_bytes
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._reserved = 0
        # Writers in progress per blob: a blob's size is reserved once, however many clients
        # upload it at the same time.
        self._pending: dict[str, int] = {}
        # sha256 -> (inode, mtime_ns, size) of the file last verified to match it.
        self._verified: dict[str, tuple[int, int, int]] = {}
        self._used = self._scan() if max_total_bytes is not None else 0

    def _scan(self) -> int:
        """Bytes held by blobs; removes temp files that a killed writer left long ago."""
        self.remove_stale()
        return sum(f.stat().st_size for f in (self.root / "blobs").glob("*/*") if f.is_file())

    def remove_stale(self) -> None:
        """Removes temp and staged files that a killed writer or client left long ago."""
        now = time.time()
        for folder in (self.root / "tmp", self.root / STAGING):
            if not folder.is_dir():
                continue
            for tmp in folder.iterdir():
                try:
                    st = tmp.lstat()
                    # ctime too: a sealed temp file (renamed into place a moment later) has
                    # an mtime of 1970, and its ctime is when it was sealed.
                    if now - max(st.st_mtime, st.st_ctime) > _STALE_TMP_SECONDS:
                        tmp.unlink()
                except (FileNotFoundError, IsADirectoryError, PermissionError):
                    pass

    def staging_dir(self) -> Path:
        """root/staging, created: where callers sharing the filesystem stage files for adopt()."""
        folder = self.root / STAGING
        folder.mkdir(exist_ok=True)
        return folder

    def used_bytes(self) -> int:
        """Bytes of committed blobs plus bytes reserved by writers in progress (quota only)."""
        with self._lock:
            return self._used + self._reserved

    def _reserve(self, digest: Digest) -> None:
        """Reserves room for a writer of `digest`: nothing when the blob is already stored or
        another writer has reserved it (the contents are the same bytes)."""
        size = digest.size_bytes
        if self.has(digest):
            with self._lock:  # negative counts: writers of a stored blob, nothing reserved
                count = self._pending.get(digest.sha256, 0)
                self._pending[digest.sha256] = count + 1 if count > 0 else count - 1
            return
        try:
            free = shutil.disk_usage(self.root / "tmp").free
        except OSError:
            free = None
        with self._lock:
            count = self._pending.get(digest.sha256, 0)
            if count > 0:
                self._pending[digest.sha256] = count + 1
                return
            if count < 0:  # writers of a blob stored when they began
                self._pending[digest.sha256] = count - 1
                return
            if free is not None and size > free:
                raise StoreFull(errno.ENOSPC, f"no room for blob {short(digest)}: {free} bytes free on the store's disk")
            if self.max_total_bytes is not None and self._used + self._reserved + size > self.max_total_bytes:
                raise StoreFull(errno.EDQUOT, f"no room for blob {short(digest)}: the store holds "
                                f"{self._used + self._reserved} of its {self.max_total_bytes} bytes")
            self._pending[digest.sha256] = 1
            self._reserved += size

    def _settle(self, digest: Digest, committed: bool) -> None:
        """A writer of `digest` is done; `committed`: its rename created the blob."""
        size = digest.size_bytes
        with self._lock:
            count = self._pending.get(digest.sha256, 0)
            if count > 0:
                count -= 1
                if count == 0:
                    self._reserved -= size
            elif count < 0:
                count += 1
            if count:
                self._pending[digest.sha256] = count
            else:
                self._pending.pop(digest.sha256, None)
            if committed:
                self._used += size

    def path(self, digest: Digest) -> Path:
        check_digest(digest)
        return self.root / "blobs" / digest.sha256[:2] / digest.sha256

    def has(self, digest: Digest) -> bool:
        """Whether the store holds `digest` intact: a blob is hashed before it is first
        trusted and again whenever its file changed, unless its file carries an unbroken
        seal (then no write touched it since a durable store hashed it); a corrupt one is
        quarantined (absent)."""
        path = self.path(digest)
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        with self._lock:
            if self._verified.get(digest.sha256) == stamp:
                return True
        if is_sealed(st, digest):
            with self._lock:
                self._verified[digest.sha256] = stamp
            return True
        h = hashlib.sha256()
        try:
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK_BYTES):
                    h.update(chunk)
        except FileNotFoundError:
            return False
        if st.st_size != digest.size_bytes or h.hexdigest() != digest.sha256:
            self._quarantine(digest, path, st.st_size)
            return False
        with self._lock:
            self._verified[digest.sha256] = stamp
        return True

    def _quarantine(self, digest: Digest, path: Path, size: int) -> None:
        """Moves a blob that no longer matches its digest aside (kept for inspection)."""
        aside = self.root / "quarantine" / f"{digest.sha256}.{uuid.uuid4().hex}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(path, aside)
        except FileNotFoundError:
            return
        log.error("blob %s is corrupt on disk (%d bytes); moved to %s, a fresh upload replaces it",
                  short(digest), size, aside)
        with self._lock:
            self._verified.pop(digest.sha256, None)
            if self.max_total_bytes is not None:
                self._used -= size

    def writer(self, digest: Digest) -> BlobWriter:
        check_digest(digest)
        if digest.size_bytes > self.max_blob_bytes:
            raise BlobTooLarge(
                f"blob {short(digest)} exceeds the store limit of {self.max_blob_bytes} bytes"
            )
        self._reserve(digest)
        try:
            return BlobWriter(self, digest)
        except OSError as exc:
            self._settle(digest, committed=False)
            raise _full(exc, digest) from exc

    def _commit_file(self, digest: Digest, tmp: Path) -> Path:
        """Renames the verified file `tmp` into place and stamps it as verified; the caller
        holds the reservation, settled here."""
        final = self.path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        new = not final.exists()
        os.replace(tmp, final)
        st = final.stat()
        with self._lock:
            self._verified[digest.sha256] = (st.st_ino, st.st_mtime_ns, st.st_size)
        self._settle(digest, committed=new)
        return final

    def adopt(self, digest: Digest, name: str) -> bool:
        """Takes the file root/staging/`name` as the blob `digest`, without copying it;
        returns whether the blob was already stored (the staged bytes are verified anyway).

        The file is first renamed into root/tmp, so the name its stager holds is gone and
        rename never follows a symlink or leaves the staging folder (`name` is one plain file
        name, checked before anything is touched). Only then is it checked: a regular file of
        one link (StagedFileRefused otherwise: whoever held another link could rewrite the
        blob after it was verified), the size limit (BlobTooLarge), its size and sha256
        (BlobCorrupt), room under the quota (StoreFull); fsynced when the store is durable,
        made read-only, and renamed into place. A refused file is removed."""
        check_digest(digest)
        if not isinstance(name, str) or not _STAGED_NAME.match(name):
            raise StagingNameError(f"staged name {str(name)[:80]!r} is not one plain file name "
                                   "(letters, digits, '.', '_', '-'; no separator, no leading dot)")
        tmp = self.root / "tmp" / f"{digest.sha256}.{uuid.uuid4().hex}.adopt"
        try:
            os.rename(self.root / STAGING / name, tmp)
        except FileNotFoundError:
            raise StagedFileMissing(f"no file {name!r} in the store's staging folder") from None
        except OSError as exc:
            raise StagedFileRefused(f"staged entry {name!r} cannot be taken: {exc.strerror}") from None
        reserved = False
        try:
            st = os.lstat(tmp)
            if not stat.S_ISREG(st.st_mode):
                raise StagedFileRefused(f"staged entry {name!r} is not a regular file")
            if st.st_nlink != 1:
                raise StagedFileRefused(f"staged file {name!r} has {st.st_nlink} links; it must have one")
            if digest.size_bytes > self.max_blob_bytes or st.st_size > self.max_blob_bytes:
                raise BlobTooLarge(f"staged file {name!r} ({st.st_size} bytes, announced {short(digest)}) exceeds "
                                   f"the store limit of {self.max_blob_bytes} bytes")
            if st.st_size != digest.size_bytes:
                raise BlobCorrupt(f"staged file {name!r} has {st.st_size} bytes, not the announced {short(digest)}")
            already = self.has(digest)
            self._reserve(digest)
            reserved = True
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb") as fh:
                if os.fstat(fd).st_ino != st.st_ino:
                    raise StagedFileRefused(f"staged file {name!r} changed while it was taken")
                # Read-only, as a blob is immutable: a process holding a hard link to it (a
                # client's cache, link_in) cannot rewrite it by mistake.
                os.fchmod(fd, 0o444)
                # Sealed before it is hashed: a write by anyone still holding the file (its
                # stager) after this instant breaks the seal, and is refused below.
                if self.durable:
                    seal(fd)
                # The stager wrote it without fsync: a durable store flushes it to disk while
                # it hashes (both release the GIL), and commits only after both.
                synced: list[BaseException] = []
                syncer = None
                if self.durable:
                    syncer = threading.Thread(target=_fsync, args=(fd, synced), name="adopt-fsync", daemon=True)
                    syncer.start()
                try:
                    actual = hashlib.file_digest(fh, "sha256").hexdigest()
                finally:
                    if syncer is not None:
                        syncer.join()
                if synced:
                    err = synced[0]
                    raise (_full(err, digest) if isinstance(err, OSError) else err) from err
                after = os.fstat(fd)
                if after.st_size != digest.size_bytes:
                    raise BlobCorrupt(f"staged file {name!r} changed size while it was hashed")
                if self.durable and after.st_mtime_ns != SEALED_MTIME_NS:
                    raise BlobCorrupt(f"staged file {name!r} was written while it was hashed")
                if actual != digest.sha256:
                    raise BlobCorrupt(f"staged bytes hash to sha256:{actual[:12]}, not the announced {short(digest)}")
            if already:
                reserved = False
                self._settle(digest, committed=False)
                tmp.unlink()
            else:
                self._commit_file(digest, tmp)
            return already
        except BaseException:
            _remove(tmp)
            if reserved:
                self._settle(digest, committed=False)
            raise

    def link_in(self, digest: Digest, src: str | Path) -> Path:
        """Takes the blob file `src` of another store sharing this filesystem (the artifact
        store, for a client's cache beside it) as the blob `digest`, without a stream: a hard
        link when on the same filesystem (blobs are immutable and written by temp + rename, so
        the link's bytes are the blob's), else a hashing copy. The link is checked after it is
        made, so what is trusted is the very file placed here: its seal when it carries one (a
        durable store hashed this inode, and nothing wrote to it since), else its sha256. Raises FileNotFoundError when
        `src` is absent, BlobCorrupt when it is not a regular file or does not match the
        digest (size or sha256; nothing is kept), OSError (permission, ...) otherwise."""
        check_digest(digest)
        if self.has(digest):
            return self.path(digest)
        st = os.lstat(src)
        if not stat.S_ISREG(st.st_mode):
            raise BlobCorrupt(f"{src} is not a regular file")
        if st.st_size != digest.size_bytes:
            raise BlobCorrupt(f"{src} has {st.st_size} bytes, not the {short(digest)} asked for")
        tmp = self.root / "tmp" / f"{digest.sha256}.{uuid.uuid4().hex}.link"
        self._reserve(digest)
        try:
            os.link(src, tmp, follow_symlinks=False)
        except OSError as exc:
            self._settle(digest, committed=False)
            if exc.errno not in _NO_LINK:
                raise
            return self._copy_in(digest, src)  # its writer reserves room of its own
        try:
            fd = os.open(tmp, os.O_RDONLY | os.O_NOFOLLOW)
            try:
                st = os.fstat(fd)
                size = st.st_size
                if is_sealed(st, digest):
                    actual = digest.sha256  # the store's verification of this very inode
                else:
                    # Mapped, not read: `src` is a store's blob, which is written by temp file
                    # + rename and never truncated afterwards (sha256_of_mapped's condition).
                    actual = sha256_of_mapped(fd)
            finally:
                os.close(fd)
            if size != digest.size_bytes or actual != digest.sha256:
                raise BlobCorrupt(f"{src} ({size} bytes) hashes to sha256:{actual[:12]}, not {short(digest)}")
            return self._commit_file(digest, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            self._settle(digest, committed=False)
            raise

    def _copy_in(self, digest: Digest, src: str | Path) -> Path:
        """A hashing copy of `src` through a writer (verified before it is renamed in)."""
        fd = os.open(src, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as fh, self.writer(digest) as writer:
            while chunk := fh.read(CHUNK_BYTES):
                writer.write(chunk)
        return self.path(digest)

    def put_bytes(self, data: bytes) -> Digest:
        digest = Digest(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        if not self.has(digest):
            with self.writer(digest) as w:
                w.write(data)
        return digest

    def get_bytes(self, digest: Digest) -> bytes:
        if not self.has(digest):
            raise FileNotFoundError(f"no intact blob {short(digest)} in the store")
        return self.path(digest).read_bytes()

    def chunks(self, digest: Digest, offset: int = 0, chunk_bytes: int = CHUNK_BYTES) -> Iterator[tuple[int, bytes]]:
        """Yields (offset, bytes); raises FileNotFoundError for an unknown blob."""
        with open(self.path(digest), "rb") as fh:
            fh.seek(offset)
            pos = offset
            while chunk := fh.read(chunk_bytes):
                yield pos, chunk
                pos += len(chunk)


def _fsync(fd: int, errors: list[BaseException]) -> None:
    try:
        os.fsync(fd)
    except BaseException as exc:  # raised by adopt() in the caller's thread
        errors.append(exc)


def _remove(path: Path) -> None:
    """Removes what a refused adoption took: a file, or a directory staged by mistake."""
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except (IsADirectoryError, PermissionError):
        shutil.rmtree(path, ignore_errors=True)


def _full(exc: OSError, digest: Digest) -> OSError:
    """StoreFull for a disk-full error, else the error itself."""
    if isinstance(exc, StoreFull) or exc.errno not in _DISK_FULL:
        return exc
    return StoreFull(exc.errno, f"the store's disk is full while writing blob {short(digest)}: {exc.strerror}")


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
        # A blob of one chunk (most models, small splits) has nothing to overlap: it is
        # written in the caller's thread, without starting one per blob.
        self._thread: threading.Thread | None = None
        if digest.size_bytes > CHUNK_BYTES:
            self._thread = threading.Thread(target=self._drain, name="blob-writer", daemon=True)
            self._thread.start()
        self._settled = False

    def _drain(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._fh.write(data)
                except BaseException as exc:  # surfaced by write()/commit() in the caller
                    self._error = exc

    def _raise_error(self) -> None:
        err = self._error
        if isinstance(err, OSError):
            raise _full(err, self.digest) from err
        raise err

    def _settle(self, committed: bool) -> None:
        if not self._settled:
            self._settled = True
            self.store._settle(self.digest, committed)

    def write(self, data: bytes) -> None:
        if self._error is not None:
            self._raise_error()
        self.received += len(data)
        if self.received > self.digest.size_bytes:
            raise BlobCorrupt(
                f"received more than the announced {self.digest.size_bytes} bytes for {short(self.digest)}"
            )
        self._hash.update(data)
        if self._thread is None:
            try:
                self._fh.write(data)
            except BaseException as exc:  # raised as the writer thread's errors are
                self._error = exc
                self._raise_error()
            return
        self._queue.put(data)

    def _join(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def commit(self) -> Path:
        self._join()
        if self._error is not None:
            self._raise_error()
        try:
            self._fh.flush()
            if self.store.durable:
                os.fsync(self._fh.fileno())
        except OSError as exc:  # a full disk can surface only at flush time
            raise _full(exc, self.digest) from exc
        if self.received != self.digest.size_bytes:
            raise BlobCorrupt(
                f"stream ended after {self.received} of {self.digest.size_bytes} bytes for {short(self.digest)}"
            )
        actual = self._hash.hexdigest()
        if actual != self.digest.sha256:
            raise BlobCorrupt(f"bytes hash to sha256:{actual[:12]}, not the announced {short(self.digest)}")
        if self.store.durable:
            # Only this writer ever had the temp file: its bytes are the ones just hashed
            # (and, fsynced, they outlive a crash, as the seal must not claim otherwise).
            seal(self._fh.fileno())
        self._fh.close()
        final = self.store.path(self.digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        new = not final.exists()
        os.replace(self.tmp, final)
        st = final.stat()
        with self.store._lock:  # hashed on the way in: verified
            self.store._verified[self.digest.sha256] = (st.st_ino, st.st_mtime_ns, st.st_size)
        self._settle(committed=new)
        return final

    def abort(self) -> None:
        self._join()
        if not self._fh.closed:
            try:
                self._fh.close()
            except OSError:  # close flushes; on a full disk that fails, and the file goes anyway
                pass
        self.tmp.unlink(missing_ok=True)
        self._settle(committed=False)

    def __enter__(self) -> BlobWriter:
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
