"""Artifacts client with a local digest-keyed cache: a blob is fetched over the wire at most
once per cache, and every fetched blob is verified before it is used.

Shared filesystem (issue 23): a client told the store's root directory (`store_dir`, or
FIXBENCH_STORE_DIR, which the local runtime sets for the evaluator and passes to the
orchestrator's clients) moves blobs without a stream. `fetch` takes the store's blob file
into the cache (a hard link on the same filesystem, else a hashing copy) and hashes it there
before trusting it; `upload_*` place the bytes in the store's staging folder and ask the
store to Adopt them, and the store verifies them as it verifies a stream. Anything odd (no
such file, wrong size or hash, no permission, a store without Adopt, one that cannot see
the staged file) falls back to the stream; unverified bytes are never used. The path goes
around the store's scope checks, so it is taken only under a full-access credential (or
none, for a store without a key): a job's scoped calls always stream, and the runtimes never
give a job's process the directory (deploy/security.md)."""

from __future__ import annotations

import collections
import concurrent.futures
import hashlib
import logging
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc

from fixbench.artifacts.digest import CHUNK_BYTES, DigestError, check_digest, digest_of_bytes, digest_of_file, short
from fixbench.artifacts.disk import STAGING, BlobCorrupt, DiskStore, StoreFull
from fixbench.grpcutil import channel
from fixbench.security.scope import HEADER, claims_full_access, full_access, load_key
from fixbench.v1 import artifacts_pb2, artifacts_pb2_grpc
from fixbench.v1.common_pb2 import Digest


class ArtifactError(RuntimeError):
    """A blob could not be moved; `code` is the gRPC status code when the store answered."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None):
        super().__init__(message)
        self.code = code


log = logging.getLogger("fixbench.artifacts")

AUTO = "auto"
# Codes after which a download that was making progress resumes from where it stopped.
RESUMABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.ABORTED}
# The store's root directory, for processes that share its filesystem (see the module doc).
STORE_DIR_ENV = "FIXBENCH_STORE_DIR"
# Adopt answers after which the bytes are streamed instead: a store without Adopt, one that
# cannot see the staged file (another directory or filesystem than this client was told),
# one that refused the staged entry or failed to take it. DATA_LOSS (the bytes do not match
# the digest) and RESOURCE_EXHAUSTED (the size limit, the quota) are raised: a stream of
# the same bytes would be refused alike.
ADOPT_FALLBACK = {grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
                  grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE}


class ArtifactClient:
    """`scope`: the store credential sent with every call (fixbench.security.scope). "auto":
    a full-access one minted from the shared key when this process holds it (orchestrator,
    evaluator), else none. Approach services pass None and hand each call its job's own.

    `store_dir`: the store's root directory when this process shares its filesystem, for
    the verified paths without a stream (module doc); "auto": FIXBENCH_STORE_DIR, else none.
    `transfers` counts how each blob moved ("shared fetch", "stream fetch", "adopt",
    "stream upload"), for logs, tests and benchmarks."""

    def __init__(self, address: str, cache_dir: str | Path, timeout: float = 600.0, scope: str | None = AUTO,
                 store_dir: str | Path | None = AUTO):
        self.address = address
        self._channel = channel(address)
        self._stub = artifacts_pb2_grpc.ArtifactsStub(self._channel)
        # Not durable: every cached blob is hashed before this process first trusts it.
        self.cache = DiskStore(cache_dir, durable=False)
        self.timeout = timeout
        if scope == AUTO:
            key = load_key()
            scope = full_access(key, "orchestrator-or-evaluator") if key else None
        self.scope = scope
        if store_dir == AUTO:
            store_dir = os.environ.get(STORE_DIR_ENV) or None
        self.store_dir = Path(store_dir) if store_dir else None
        self.transfers: collections.Counter[str] = collections.Counter()

    def _shares(self, scope: str | None) -> bool:
        """Whether this call may use the store's directory: told where it is, and under a
        credential that claims full access (or none); a job's scoped call streams, so its
        scope is checked by the store."""
        return self.store_dir is not None and claims_full_access(scope or self.scope)

    def _metadata(self, scope: str | None) -> tuple | None:
        token = scope or self.scope
        return ((HEADER, token),) if token else None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ArtifactClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, what: str, fn, *args, scope: str | None = None, **kwargs):
        try:
            return fn(*args, timeout=self.timeout, metadata=self._metadata(scope), **kwargs)
        except grpc.RpcError as exc:
            raise ArtifactError(f"{what} at {self.address} failed: {exc.code().name}: {exc.details()}", exc.code()) from exc

    def stat(self, digest: Digest, scope: str | None = None) -> artifacts_pb2.StatResponse:
        return self._call(f"stat of {short(digest)}", self._stub.Stat, artifacts_pb2.StatRequest(digest=digest),
                          scope=scope)

    def find_missing(self, digests: list[Digest], scope: str | None = None) -> list[Digest]:
        """The digests the store does not hold intact, in one round trip per 10000."""
        missing: list[Digest] = []
        for i in range(0, len(digests), 10000):
            reply = self._call("find missing", self._stub.FindMissing,
                               artifacts_pb2.FindMissingRequest(digests=digests[i : i + 10000]), scope=scope)
            missing += reply.missing
        return missing

    def upload_files(self, files: list[tuple[str | Path, Digest]]) -> int:
        """Uploads those of `files` (path, its digest as recorded) the store lacks, asking once
        which they are; returns how many were sent. The store still verifies every byte sent
        against the digest, so a recorded digest that no longer fits its file is refused."""
        wanted = {d.sha256: (path, d) for path, d in files}
        missing = self.find_missing([d for _, d in wanted.values()])
        for digest in missing:
            self._upload_file(wanted[digest.sha256][0], digest, known_missing=True)
        return len(missing)

    def _adopt(self, digest: Digest, stage, scope: str | None) -> Digest | None:
        """Places the blob in the store's staging folder (`stage(path)` writes it there) and
        asks the store to Adopt it; None when the stream must be used instead (the folder
        cannot be written, or an ADOPT_FALLBACK answer). The staged file is removed in every
        case (the store takes it; this removes what it did not take)."""
        name = f"{digest.sha256}.{uuid.uuid4().hex}"
        staged = self.store_dir / STAGING / name
        try:
            try:
                stage(staged)
            except OSError as exc:
                log.info("staging %s in %s failed (%s); streaming it", short(digest), staged.parent, exc)
                return None
            try:
                reply = self._stub.Adopt(artifacts_pb2.AdoptRequest(digest=digest, name=name), timeout=self.timeout,
                                         metadata=self._metadata(scope))
            except grpc.RpcError as exc:
                if exc.code() in ADOPT_FALLBACK:
                    log.info("the store did not adopt %s (%s: %s); streaming it", short(digest), exc.code().name,
                             exc.details())
                    return None
                raise ArtifactError(f"adopt of {short(digest)} at {self.address} failed: {exc.code().name}: "
                                    f"{exc.details()}", exc.code()) from exc
        finally:
            staged.unlink(missing_ok=True)
        self.transfers["adopt"] += 1
        return reply.digest

    def _upload(self, digest: Digest, chunks: Iterator[bytes], scope: str | None = None,
                known_missing: bool = False, stage=None) -> Digest:
        """Streams `chunks`; `stage(path)`: writes the blob to `path` instead, for Adopt when
        this client shares the store's filesystem (the stream stays the fallback)."""
        # A blob that fits one message is sent without asking first: asking costs the same
        # round trip, and the store verifies the bytes either way (already_present).
        if not known_missing and digest.size_bytes > CHUNK_BYTES and self.stat(digest, scope).present:
            return digest
        if stage is not None and self._shares(scope):
            adopted = self._adopt(digest, stage, scope)
            if adopted is not None:
                return adopted
        self.transfers["stream upload"] += 1

        def requests():
            first = True
            for data in chunks:
                yield artifacts_pb2.UploadRequest(digest=digest if first else None, data=data)
                first = False
            if first:
                yield artifacts_pb2.UploadRequest(digest=digest)

        reply = self._call(f"upload of {short(digest)}", self._stub.Upload, requests(), scope=scope)
        return reply.digest

    def upload_bytes(self, data: bytes, scope: str | None = None, digest: Digest | None = None) -> Digest:
        """Uploads `data`; `digest`: its digest when the caller already computed it from
        these bytes (not hashed again here; the store still verifies every byte against it
        and refuses a mismatch with DATA_LOSS)."""
        view = memoryview(data)
        prestaged: Path | None = None
        if digest is None and len(data) > CHUNK_BYTES and self._shares(scope):
            # Hashing and writing the staged file both release the GIL: on two cores the
            # bytes are written while they are hashed, instead of after.
            digest, prestaged = self._hash_while_staging(view)
        elif digest is None:
            digest = digest_of_bytes(data)

        def stage(staged: Path) -> None:
            if prestaged is not None:
                os.rename(prestaged, staged)
                return
            with open(staged, "xb") as fh:
                fh.write(view)

        try:
            return self._upload(digest, (bytes(view[i : i + CHUNK_BYTES]) for i in range(0, len(data), CHUNK_BYTES)),
                                scope, stage=stage)
        finally:
            if prestaged is not None:
                prestaged.unlink(missing_ok=True)  # not taken: the store held the blob already

    def _hash_while_staging(self, view: memoryview) -> tuple[Digest, Path | None]:
        """The bytes' digest, and a staged copy written meanwhile by a helper thread (None when
        it could not be written: the upload then streams)."""
        path = self.store_dir / STAGING / f"upload.{uuid.uuid4().hex}"

        def write() -> None:
            with open(path, "xb") as fh:
                fh.write(view)

        with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="stage") as pool:
            written = pool.submit(write)
            digest = Digest(sha256=hashlib.sha256(view).hexdigest(), size_bytes=len(view))
            try:
                written.result()
            except OSError as exc:
                log.info("staging %s in %s failed (%s); streaming it", short(digest), path.parent, exc)
                path.unlink(missing_ok=True)
                return digest, None
        return digest, path

    def upload_file(self, path: str | Path) -> Digest:
        return self._upload_file(path, digest_of_file(path))

    def _upload_file(self, path: str | Path, digest: Digest, known_missing: bool = False) -> Digest:
        def chunks():
            with open(path, "rb") as fh:
                while chunk := fh.read(CHUNK_BYTES):
                    yield chunk

        def stage(staged: Path) -> None:
            # A copy, not a link: the store takes only a file of one link, so that no one
            # else's name for it can change the blob after it is verified.
            # shutil.copyfile copies in the kernel (sendfile) where it can.
            shutil.copyfile(path, staged)

        return self._upload(digest, chunks(), known_missing=known_missing, stage=stage)

    def fetch(self, digest: Digest, scope: str | None = None) -> Path:
        """Path of the verified blob in the local cache, downloading it when absent."""
        try:
            check_digest(digest)
        except DigestError as exc:  # e.g. a "digest" that is a path: never touch the cache with it
            raise ArtifactError(f"cannot fetch: {exc}", grpc.StatusCode.INVALID_ARGUMENT) from exc
        if self.cache.has(digest):
            return self.cache.path(digest)
        if self._shares(scope):
            shared = self._fetch_shared(digest)
            if shared is not None:
                return shared
        self.transfers["stream fetch"] += 1
        try:
            with self.cache.writer(digest) as writer:
                self._download_into(writer, digest, scope)
        except grpc.RpcError as exc:
            raise ArtifactError(f"download of {short(digest)} from {self.address} failed: {exc.code().name}: {exc.details()}", exc.code()) from exc
        except BlobCorrupt as exc:
            raise ArtifactError(f"download of {short(digest)} is corrupt: {exc}", grpc.StatusCode.DATA_LOSS) from exc
        except StoreFull as exc:
            raise ArtifactError(f"no room in the local cache {self.cache.root} for {short(digest)}: {exc}",
                                grpc.StatusCode.RESOURCE_EXHAUSTED) from exc
        return self.cache.path(digest)

    def _fetch_shared(self, digest: Digest) -> Path | None:
        """The blob taken from the store's own file into the cache (DiskStore.link_in: a hard
        link, else a hashing copy; trusted on the store's unbroken seal on the linked inode,
        else hashed first); None, with the reason logged,
        when the stream must bring it instead: no such file (a blob the store lacks, or a
        wrong directory), a file that does not match the digest (tampered, torn: the store
        quarantines it when the stream asks), no permission."""
        src = self.store_dir / "blobs" / digest.sha256[:2] / digest.sha256
        try:
            path = self.cache.link_in(digest, src)
        except FileNotFoundError:
            log.debug("%s is not in %s; streaming it", short(digest), self.store_dir)
            return None
        except BlobCorrupt as exc:
            log.warning("the store's file for %s is refused (%s); streaming it", short(digest), exc)
            return None
        except OSError as exc:
            log.info("cannot take %s from %s (%s); streaming it", short(digest), self.store_dir, exc)
            return None
        self.transfers["shared fetch"] += 1
        return path

    def _download_into(self, writer, digest: Digest, scope: str | None) -> None:
        """Streams the blob into the cache writer; a stream that drops after some bytes came
        resumes at the next byte (DownloadRequest.offset) instead of starting over, keeping
        what was received and hashed. A stream that brings nothing fails as it is."""
        while True:
            start = writer.received
            try:
                stream = self._stub.Download(artifacts_pb2.DownloadRequest(digest=digest, offset=start),
                                             timeout=self.timeout, metadata=self._metadata(scope))
                for msg in stream:
                    if msg.offset != writer.received:
                        raise BlobCorrupt(f"chunk at offset {msg.offset}, expected {writer.received}")
                    writer.write(msg.data)
                return
            except grpc.RpcError as exc:
                if exc.code() not in RESUMABLE or writer.received == start:
                    raise

    def fetch_bytes(self, digest: Digest, scope: str | None = None) -> bytes:
        return self.fetch(digest, scope).read_bytes()


def verify_bytes(data: bytes, digest: Digest) -> None:
    if len(data) != digest.size_bytes or hashlib.sha256(data).hexdigest() != digest.sha256:
        raise ArtifactError(f"bytes do not match {short(digest)}", grpc.StatusCode.DATA_LOSS)
