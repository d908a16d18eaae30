"""gRPC Artifacts service over a DiskStore."""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time

import grpc

from fixbench.artifacts.digest import DigestError, check_digest, short
from fixbench.artifacts.disk import (
    BlobCorrupt,
    BlobTooLarge,
    DiskStore,
    StagedFileMissing,
    StagedFileRefused,
    StagingNameError,
    StoreFull,
)
from fixbench.artifacts.heap import keep_chunk_buffers
from fixbench.security.scope import HEADER, Scope, ScopeError, verify
from fixbench.v1 import artifacts_pb2, artifacts_pb2_grpc

log = logging.getLogger("fixbench.artifacts")


class UploadIdle(Exception):
    """An upload stream that sent nothing for too long."""


# Uploads in progress at once (others are refused with RESOURCE_EXHAUSTED, and retried by
# their client), and seconds an upload may go without a message before it is dropped: stalled
# clients can neither hold every server thread nor hold one forever.
MAX_UPLOADS = int(os.environ.get("FIXBENCH_STORE_MAX_UPLOADS", "16"))
UPLOAD_IDLE_SECONDS = float(os.environ.get("FIXBENCH_UPLOAD_IDLE_SECONDS", "60"))
_END = object()


class ArtifactsServicer(artifacts_pb2_grpc.ArtifactsServicer):
    def __init__(self, store: DiskStore, max_uploads: int = MAX_UPLOADS, upload_idle_seconds: float = UPLOAD_IDLE_SECONDS,
                 scope_key: bytes | None = None):
        """`scope_key`: the key shared with the orchestrator (fixbench.security.scope); with
        it every call needs a signed credential, a job's covering only its own inputs."""
        self.store = store
        keep_chunk_buffers()  # the store streams: reuse chunk buffers' pages (fixbench.artifacts.heap)
        self.max_uploads = max_uploads
        self.upload_idle_seconds = upload_idle_seconds
        self._upload_slots = threading.BoundedSemaphore(max_uploads)
        self.scope_key = scope_key
        self._written: dict[str, int] = {}  # bytes uploaded per job credential
        self._denied_lock = threading.Lock()
        # Where callers sharing the filesystem stage files for Adopt; what a killed caller
        # left there long ago goes at start.
        store.staging_dir()
        store.remove_stale()

    # ---- scoped credentials -----------------------------------------------------------------
    def _scope(self, context, what: str) -> Scope | None:
        if self.scope_key is None:
            return None
        token = dict(context.invocation_metadata()).get(HEADER)
        try:
            return verify(self.scope_key, token)
        except ScopeError as exc:
            self._deny(context, None, what, str(exc))

    def _deny(self, context, scope: Scope | None, what: str, reason: str) -> None:
        """Refuses the call with PERMISSION_DENIED and records the attempt (denied.jsonl)."""
        record = {"time": time.time(), "job": scope.job if scope else None, "call": what, "reason": reason,
                  "peer": context.peer()}
        log.warning("denied %s: %s", what, reason)
        with self._denied_lock, open(self.store.root / "denied.jsonl", "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
        context.abort(grpc.StatusCode.PERMISSION_DENIED, reason)

    def _charge_write(self, context, scope: Scope | None, digest) -> None:
        if scope is None or scope.write_bytes is None:
            return
        with self._denied_lock:
            used = self._written.get(scope.job, 0)
            allowed = used + digest.size_bytes <= scope.write_bytes
            if allowed:
                self._written[scope.job] = used + digest.size_bytes
        if not allowed:
            self._deny(context, scope, f"upload of {short(digest)}",
                       f"job {scope.job[:12]} may upload {scope.write_bytes} bytes in all; it has uploaded {used}")

    @staticmethod
    def server_workers(max_uploads: int = MAX_UPLOADS) -> int:
        """Server threads for a store: every upload slot plus as many again for Stat,
        Download and health, which so never wait behind uploads."""
        return max_uploads + 16

    def _messages(self, request_iterator, context):
        """The upload's messages, read by a helper thread so that an idle stream is noticed:
        no message for upload_idle_seconds ends the upload with DEADLINE_EXCEEDED."""
        inbox: queue.Queue = queue.Queue(maxsize=4)

        def read():
            try:
                for msg in request_iterator:
                    inbox.put(msg)
            except grpc.RpcError:
                pass
            except Exception as exc:  # noqa: BLE001 - handed to the handler thread
                inbox.put(exc)
            inbox.put(_END)

        threading.Thread(target=read, name="upload-reader", daemon=True).start()
        while True:
            try:
                item = inbox.get(timeout=self.upload_idle_seconds)
            except queue.Empty:
                raise UploadIdle(f"no upload message for {self.upload_idle_seconds:g} s") from None
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item

    def Stat(self, request, context):
        self._scope(context, "stat")
        try:
            present = self.store.has(request.digest)
        except DigestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return artifacts_pb2.StatResponse(present=present, max_blob_bytes=self.store.max_blob_bytes)

    # Digests one FindMissing call may ask about: a bound on the work one call can ask for.
    MAX_FIND_MISSING = 10000

    def FindMissing(self, request, context):
        self._scope(context, "find missing")
        if len(request.digests) > self.MAX_FIND_MISSING:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"{len(request.digests)} digests in one call; at most {self.MAX_FIND_MISSING}")
        missing = []
        try:
            for digest in request.digests:
                if not self.store.has(digest):  # verified as Stat does: a corrupt blob is missing
                    missing.append(digest)
        except DigestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return artifacts_pb2.FindMissingResponse(missing=missing, max_blob_bytes=self.store.max_blob_bytes)

    def Upload(self, request_iterator, context):
        scope = self._scope(context, "upload")
        if not self._upload_slots.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the store is taking {self.max_uploads} uploads already; retry shortly")
        try:
            return self._upload(request_iterator, context, scope)
        finally:
            self._upload_slots.release()

    def _upload(self, request_iterator, context, scope: Scope | None = None):
        stream = self._messages(request_iterator, context)
        try:
            first = next(stream)
        except StopIteration:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty upload: the first message must name the digest")
        except UploadIdle as exc:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
        if not first.HasField("digest"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first upload message must name the digest and size")
        digest = first.digest
        self._charge_write(context, scope, digest)
        try:
            writer = self.store.writer(digest)
        except DigestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except (BlobTooLarge, StoreFull) as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        already = self.store.has(digest)
        try:
            with writer:
                writer.write(first.data)
                for msg in stream:
                    writer.write(msg.data)
        except BlobCorrupt as exc:
            log.warning("rejected upload: %s", exc)
            context.abort(grpc.StatusCode.DATA_LOSS, str(exc))
        except StoreFull as exc:
            # The writer removed its temp file: nothing half-written stays behind.
            log.warning("store full: %s", exc)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except UploadIdle as exc:
            # A stalled client: the writer already removed its temp file and its reservation.
            log.warning("dropped upload of %s: %s", short(digest), exc)
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, f"upload of {short(digest)} dropped: {exc}")
        except grpc.RpcError:
            # The client went away mid-stream; the writer already removed its temp file.
            context.abort(grpc.StatusCode.CANCELLED, f"upload of {short(digest)} was interrupted")
        return artifacts_pb2.UploadResponse(digest=digest, already_present=already)

    def Adopt(self, request, context):
        """A staged file taken as a blob, verified as an upload is (DiskStore.adopt). Only for
        full-access credentials (or a store without a key): the runtimes give the store's
        directory to the orchestrator and the evaluator only, never to a job's process,
        whose uploads stream and are charged to its write quota."""
        digest = request.digest
        scope = self._scope(context, "adopt")
        if scope is not None and (scope.read is not None or scope.write_bytes is not None):
            self._deny(context, scope, f"adopt of {short(digest)}",
                       "adopting a staged file is for full-access callers; a job's credential uploads by stream")
        if not self._upload_slots.acquire(blocking=False):
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                          f"the store is taking {self.max_uploads} uploads already; retry shortly")
        try:
            already = self.store.adopt(digest, request.name)
        except (DigestError, StagingNameError) as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except StagedFileMissing as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except StagedFileRefused as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except (BlobTooLarge, StoreFull) as exc:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc))
        except BlobCorrupt as exc:
            log.warning("rejected staged file: %s", exc)
            context.abort(grpc.StatusCode.DATA_LOSS, str(exc))
        except OSError as exc:
            context.abort(grpc.StatusCode.INTERNAL, f"adopting {short(digest)} failed: {exc}")
        finally:
            self._upload_slots.release()
        return artifacts_pb2.AdoptResponse(digest=digest, already_present=already)

    def Download(self, request, context):
        digest = request.digest
        scope = self._scope(context, "download")
        try:
            check_digest(digest)
        except DigestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if scope is not None and not scope.may_read(digest.sha256):
            self._deny(context, scope, f"download of {short(digest)}",
                       f"{short(digest)} is not among the blobs job {scope.job[:12]} may read")
        if not self.store.has(digest):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no blob {short(digest)} in the store")
        if not 0 <= request.offset <= digest.size_bytes:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, f"offset {request.offset} is outside the blob")
        for offset, data in self.store.chunks(digest, request.offset):
            yield artifacts_pb2.DownloadResponse(offset=offset, data=data)
