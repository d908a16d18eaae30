"""Issue 18 items 13, 14, 15: the store verifies blobs on read and heals a corrupt one from
a fresh upload; stalled uploads time out and never block health; digests are exactly 64 hex
characters; the quota reserves a blob's size once, not per concurrent writer."""

from __future__ import annotations

import hashlib
import os
import threading
import time

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from fixbench.artifacts.client import ArtifactClient
from fixbench.artifacts.digest import DigestError, check_digest, digest_of_bytes
from fixbench.artifacts.disk import DiskStore, StoreFull
from fixbench.artifacts.server import ArtifactsServicer
from fixbench.grpcutil import Server, channel
from fixbench.v1 import artifacts_pb2, artifacts_pb2_grpc
from fixbench.v1.common_pb2 import Digest


# ---- item 13: a corrupt blob is quarantined and healed ---------------------------------------
def test_a_corrupt_blob_is_quarantined_and_a_fresh_upload_repairs_it(store, tmp_path):
    server, disk, client = store
    data = os.urandom(5000)
    digest = client.upload_bytes(data)
    path = disk.path(digest)
    # Bit rot (same size): the store must not serve it, nor claim to hold it.
    flipped = bytearray(data)
    flipped[100] ^= 0xFF
    path.write_bytes(bytes(flipped))
    fresh = ArtifactClient(server.address, tmp_path / "fresh-cache", timeout=30)
    try:
        with pytest.raises(Exception) as err:
            fresh.fetch_bytes(digest)
        assert "NOT_FOUND" in str(err.value) or "corrupt" in str(err.value)
        assert list((disk.root / "quarantine").iterdir()), "the corrupt blob was not kept aside"
        assert not fresh.stat(digest).present
        # The client's re-upload is accepted (it used to be skipped as "already present").
        client.upload_bytes(data)
        assert fresh.fetch_bytes(digest) == data
    finally:
        fresh.close()


def test_a_corrupt_cache_entry_is_fetched_again(store):
    _, _, client = store
    data = os.urandom(3000)
    digest = client.upload_bytes(data)
    assert client.fetch_bytes(digest) == data
    cached = client.cache.path(digest)
    cached.write_bytes(b"\0" * len(data))
    assert client.fetch_bytes(digest) == data


# ---- item 15: digests and quota ---------------------------------------------------------------
def test_a_digest_with_a_trailing_newline_is_refused():
    good = hashlib.sha256(b"x").hexdigest()
    check_digest(Digest(sha256=good, size_bytes=1))
    for bad in (good + "\n", good + "\r\n", "\n" + good):
        with pytest.raises(DigestError):
            check_digest(Digest(sha256=bad, size_bytes=1))


def test_the_quota_counts_a_blob_once(tmp_path):
    data = os.urandom(600)
    digest = digest_of_bytes(data)
    disk = DiskStore(tmp_path / "s", max_total_bytes=1000)
    # Two concurrent writers of the same blob reserve its size once...
    a, b = disk.writer(digest), disk.writer(digest)
    assert disk.used_bytes() == 600
    a.write(data)
    a.commit()
    b.write(data)
    b.commit()
    assert disk.used_bytes() == 600
    # ...and a writer of a blob already stored reserves nothing.
    again = disk.writer(digest)
    assert disk.used_bytes() == 600
    again.abort()
    other = os.urandom(300)
    disk.put_bytes(other)
    assert disk.used_bytes() == 900
    with pytest.raises(StoreFull):
        disk.writer(digest_of_bytes(os.urandom(200)))


# ---- item 14: stalled uploads ----------------------------------------------------------------
def test_stalled_uploads_time_out_and_health_still_answers(tmp_path):
    disk = DiskStore(tmp_path / "store")
    servicer = ArtifactsServicer(disk, upload_idle_seconds=1.0)
    server = Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(servicer, s)], ["Artifacts"],
                    max_workers=ArtifactsServicer.server_workers())
    release = threading.Event()
    data = os.urandom(2048)
    digest = digest_of_bytes(data)

    def stalled():
        yield artifacts_pb2.UploadRequest(digest=digest, data=data[:1024])
        release.wait(30)

    try:
        with channel(server.address) as ch:
            stub = artifacts_pb2_grpc.ArtifactsStub(ch)
            calls = [stub.Upload.future(stalled(), timeout=30) for _ in range(64)]
            time.sleep(0.3)
            started = time.monotonic()
            reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING and time.monotonic() - started < 2
            codes = []
            for call in calls:
                try:
                    call.result(timeout=20)
                    codes.append(grpc.StatusCode.OK)
                except grpc.RpcError as exc:
                    codes.append(exc.code())
            # Each stalled stream ends: idle too long, or refused while the upload slots are full.
            assert set(codes) <= {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}, codes
            assert grpc.StatusCode.DEADLINE_EXCEEDED in codes
            release.set()
            # The store still takes a healthy upload afterwards.
            msgs = [artifacts_pb2.UploadRequest(digest=digest, data=data)]
            assert stub.Upload(iter(msgs), timeout=10).digest == digest
        assert not list((disk.root / "tmp").iterdir())
    finally:
        release.set()
        server.stop(0)
