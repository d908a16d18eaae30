"""gRPC Artifacts service over a DiskStore."""

from __future__ import annotations

import logging

import grpc

from fixbench.artifacts.digest import DigestError, check_digest, short
from fixbench.artifacts.disk import BlobCorrupt, BlobTooLarge, DiskStore, StoreFull
from fixbench.v1 import artifacts_pb2, artifacts_pb2_grpc

log = logging.getLogger("fixbench.artifacts")


class ArtifactsServicer(artifacts_pb2_grpc.ArtifactsServicer):
    def __init__(self, store: DiskStore):
        self.store = store

    def Stat(self, request, context):
        try:
            present = self.store.has(request.digest)
        except DigestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        return artifacts_pb2.StatResponse(present=present, max_blob_bytes=self.store.max_blob_bytes)

    def Upload(self, request_iterator, context):
        stream = iter(request_iterator)
        try:
            first = next(stream)
        except StopIteration:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "empty upload: the first message must name the digest")
        if not first.HasField("digest"):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "the first upload message must name the digest and size")
        digest = first.digest
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
        except grpc.RpcError:
            # The client went away mid-stream; the writer already removed its temp file.
            context.abort(grpc.StatusCode.CANCELLED, f"upload of {short(digest)} was interrupted")
        return artifacts_pb2.UploadResponse(digest=digest, already_present=already)

    def Download(self, request, context):
        digest = request.digest
        try:
            check_digest(digest)
        except DigestError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if not self.store.has(digest):
            context.abort(grpc.StatusCode.NOT_FOUND, f"no blob {short(digest)} in the store")
        if not 0 <= request.offset <= digest.size_bytes:
            context.abort(grpc.StatusCode.OUT_OF_RANGE, f"offset {request.offset} is outside the blob")
        for offset, data in self.store.chunks(digest, request.offset):
            yield artifacts_pb2.DownloadResponse(offset=offset, data=data)
