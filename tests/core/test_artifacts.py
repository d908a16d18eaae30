"""The artifact store: verified chunked streams, limits, atomicity, cache, health, reflection."""

import hashlib
import os
import threading

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from fixbench.artifacts.client import ArtifactError
from fixbench.artifacts.digest import CHUNK_BYTES, digest_of_bytes, sha256_of_mapped
from fixbench.grpcutil import channel
from fixbench.v1 import artifacts_pb2, artifacts_pb2_grpc
from fixbench.v1.common_pb2 import Digest


def _raw_upload(address, digest, chunks):
    with channel(address) as ch:
        stub = artifacts_pb2_grpc.ArtifactsStub(ch)
        msgs = [artifacts_pb2.UploadRequest(digest=digest if i == 0 else None, data=c) for i, c in enumerate(chunks)]
        return stub.Upload(iter(msgs), timeout=10)


def _no_temp_files(disk):
    return list((disk.root / "tmp").iterdir()) == []


def test_round_trip_in_chunks(store):
    server, disk, client = store
    data = os.urandom(3 * 1024 * 1024 + 17)
    digest = client.upload_bytes(data)
    assert digest.sha256 == hashlib.sha256(data).hexdigest() and digest.size_bytes == len(data)
    assert disk.has(digest)
    other = type(client)(server.address, disk.root.parent / "other-cache")
    assert other.fetch_bytes(digest) == data
    with channel(server.address) as ch:
        chunks = list(artifacts_pb2_grpc.ArtifactsStub(ch).Download(artifacts_pb2.DownloadRequest(digest=digest)))
    assert len(chunks) == 4 and max(len(c.data) for c in chunks) == 1024 * 1024


def test_wrong_digest_is_data_loss_and_nothing_is_stored(store):
    server, disk, _ = store
    data = b"hello world"
    wrong = Digest(sha256=hashlib.sha256(b"other").hexdigest(), size_bytes=len(data))
    with pytest.raises(grpc.RpcError) as err:
        _raw_upload(server.address, wrong, [data])
    assert err.value.code() == grpc.StatusCode.DATA_LOSS and "hash" in err.value.details()
    assert not disk.has(wrong) and _no_temp_files(disk)


def test_truncated_upload_is_data_loss(store):
    server, disk, _ = store
    data = os.urandom(2000)
    digest = digest_of_bytes(data)
    with pytest.raises(grpc.RpcError) as err:
        _raw_upload(server.address, digest, [data[:1000]])
    assert err.value.code() == grpc.StatusCode.DATA_LOSS and "ended after 1000 of 2000" in err.value.details()
    assert not disk.has(digest) and _no_temp_files(disk)


def test_blob_over_the_limit_is_refused_before_transfer(store):
    server, disk, client = store
    with pytest.raises(ArtifactError) as err:
        client.upload_bytes(os.urandom(9 * 1024 * 1024))
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "limit" in str(err.value)
    assert _no_temp_files(disk)


def test_unknown_and_malformed_digests(store):
    server, _, client = store
    with pytest.raises(ArtifactError) as err:
        client.fetch_bytes(digest_of_bytes(b"never uploaded"))
    assert err.value.code == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err2:
        _raw_upload(server.address, Digest(sha256="../../etc/passwd", size_bytes=3), [b"abc"])
    assert err2.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_server_keeps_serving_after_bad_requests(store):
    server, _, client = store
    with pytest.raises(grpc.RpcError):
        _raw_upload(server.address, Digest(sha256="0" * 64, size_bytes=1), [b"xy"])
    assert client.fetch_bytes(client.upload_bytes(b"still fine")) == b"still fine"


def test_concurrent_uploads_of_the_same_blob_are_atomic(store):
    server, disk, _ = store
    data = os.urandom(2 * 1024 * 1024)
    digest = digest_of_bytes(data)
    chunks = [data[i : i + 256 * 1024] for i in range(0, len(data), 256 * 1024)]
    errors, seen_partial = [], []

    def upload():
        try:
            _raw_upload(server.address, digest, chunks)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    def watch():
        for _ in range(200):
            path = disk.path(digest)
            if path.exists() and path.stat().st_size != len(data):
                seen_partial.append(path.stat().st_size)

    threads = [threading.Thread(target=upload) for _ in range(6)] + [threading.Thread(target=watch)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and not seen_partial
    assert disk.get_bytes(digest) == data and _no_temp_files(disk)


def test_client_cache_serves_without_the_store(store):
    server, _, client = store
    digest = client.upload_bytes(b"cached bytes")
    client.fetch(digest)
    server.stop(0)
    assert client.fetch_bytes(digest) == b"cached bytes"


def test_health_and_reflection(store):
    server, _, _ = store
    with channel(server.address) as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service="fixbench.v1.Artifacts"))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        answer = next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")])))
        names = {s.name for s in answer.list_services_response.service}
    assert "fixbench.v1.Artifacts" in names and "grpc.health.v1.Health" in names


@pytest.mark.parametrize("size", [0, 1, CHUNK_BYTES + 7, 8 * CHUNK_BYTES, 17 * CHUNK_BYTES + 3])
def test_mapped_hash_matches_hashlib(tmp_path, size):
    data = os.urandom(size)
    path = tmp_path / "blob"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        assert sha256_of_mapped(fd) == hashlib.sha256(data).hexdigest()
    finally:
        os.close(fd)
