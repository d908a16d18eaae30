"""Issue 23 item 1: FindMissing asks about many blobs in one round trip, the orchestrator
uploads only the missing fault files with it, and a download that drops part way resumes at
DownloadRequest.offset instead of starting over."""

import os

import grpc
import pytest

from fixbench.artifacts.client import ArtifactClient, ArtifactError
from fixbench.artifacts.digest import CHUNK_BYTES, digest_of_bytes
from fixbench.artifacts.disk import DiskStore
from fixbench.artifacts.server import ArtifactsServicer
from fixbench.grpcutil import Server
from fixbench.v1 import artifacts_pb2_grpc
from fixbench.v1.common_pb2 import Digest


def test_find_missing_names_absent_and_corrupt_blobs(store):
    server, disk, client = store
    kept = client.upload_bytes(b"kept")
    spoiled = client.upload_bytes(b"spoiled")
    disk.path(spoiled).write_bytes(b"spoilt!")  # same size, other bytes: quarantined when asked
    absent = digest_of_bytes(b"never uploaded")
    assert [d.sha256 for d in client.find_missing([kept, spoiled, absent])] == [spoiled.sha256, absent.sha256]
    with pytest.raises(ArtifactError) as info:
        client.find_missing([Digest(sha256="not hex", size_bytes=1)])
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_upload_files_sends_only_what_the_store_lacks(store, tmp_path):
    server, disk, client = store
    files = []
    for i in range(3):
        path = tmp_path / f"f{i}.bin"
        path.write_bytes(os.urandom(1000 + i))
        files.append((path, digest_of_bytes(path.read_bytes())))
    client.upload_file(files[0][0])
    assert client.upload_files(files) == 2 and all(disk.has(d) for _, d in files)
    assert client.upload_files(files) == 0
    # a recorded digest that no longer fits its file is refused by the store, not stored
    files[1][0].write_bytes(b"changed")
    wrong = digest_of_bytes(os.urandom(50))
    with pytest.raises(ArtifactError) as info:
        client.upload_files([(files[1][0], wrong)])
    assert info.value.code == grpc.StatusCode.DATA_LOSS and not disk.has(wrong)


class _DropsOnce(ArtifactsServicer):
    """Drops the first download after one chunk; records each request's offset."""

    def __init__(self, store):
        super().__init__(store)
        self.offsets = []

    def Download(self, request, context):
        self.offsets.append(request.offset)
        for i, msg in enumerate(super().Download(request, context)):
            if len(self.offsets) == 1 and i == 1:
                context.abort(grpc.StatusCode.UNAVAILABLE, "connection dropped")
            yield msg


def test_a_dropped_download_resumes_at_the_next_byte(tmp_path):
    disk = DiskStore(tmp_path / "store")
    servicer = _DropsOnce(disk)
    server = Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(servicer, s)], ["Artifacts"])
    try:
        data = os.urandom(3 * CHUNK_BYTES + 5)
        digest = disk.put_bytes(data)
        with ArtifactClient(server.address, tmp_path / "cache", timeout=30, scope=None) as client:
            assert client.fetch_bytes(digest) == data
        assert servicer.offsets == [0, CHUNK_BYTES]
    finally:
        server.stop(0)
