"""Issue 18 item 11: each job gets a scoped store credential (signed, expiring, the digests
it may read, a write quota) that the store enforces; the orchestrator and the evaluator keep
full access. A service asking for the test split gets PERMISSION_DENIED, and the attempt is
recorded."""

from __future__ import annotations

import json
import os

import grpc
import numpy as np
import pytest
from google.protobuf import struct_pb2

from fixbench.arrays import npz_bytes
from fixbench.artifacts.client import ArtifactClient, ArtifactError
from fixbench.artifacts.disk import DiskStore
from fixbench.artifacts.server import ArtifactsServicer
from fixbench.grpcutil import Server, channel
from fixbench.sdk import Approach, Outcome
from fixbench.sdk.server import RepairServicer
from fixbench.security.scope import ScopeError, full_access, mint, verify
from fixbench.v1 import artifacts_pb2_grpc, repair_pb2, repair_pb2_grpc
from tests.conftest import blob_dataset, dense_classifier

KEY = b"k" * 32


@pytest.fixture
def scoped_store(tmp_path):
    disk = DiskStore(tmp_path / "store")
    server = Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(
        ArtifactsServicer(disk, scope_key=KEY), s)], ["Artifacts"])
    admin = ArtifactClient(server.address, tmp_path / "admin-cache", timeout=30, scope=full_access(KEY, "orchestrator"))
    yield server, disk, admin
    admin.close()
    server.stop(0)


def _denied(disk):
    path = disk.root / "denied.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_job_reads_only_its_own_blobs_and_writes_within_its_quota(scoped_store, tmp_path):
    server, disk, admin = scoped_store
    model, test = admin.upload_bytes(os.urandom(1000)), admin.upload_bytes(os.urandom(2000))
    job = ArtifactClient(server.address, tmp_path / "job-cache", timeout=30,
                         scope=mint(KEY, "job-1", [model.sha256], write_bytes=1500))
    assert len(job.fetch_bytes(model)) == 1000
    with pytest.raises(ArtifactError) as err:
        job.fetch_bytes(test)
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
    (record,) = _denied(disk)
    assert record["job"] == "job-1" and test.sha256[:12] in record["call"]
    job.upload_bytes(os.urandom(1200))
    with pytest.raises(ArtifactError) as err:
        job.upload_bytes(os.urandom(400))
    assert err.value.code == grpc.StatusCode.PERMISSION_DENIED and "may upload 1500 bytes" in str(err.value)
    # No credential, a forged one or an expired one: refused.
    for scope in (None, mint(b"other key", "job-1", None, None), mint(KEY, "job-1", None, None, ttl_seconds=-1)):
        anonymous = ArtifactClient(server.address, tmp_path / "anon-cache", timeout=30, scope=scope)
        with pytest.raises(ArtifactError) as err:
            anonymous.stat(model)
        assert err.value.code == grpc.StatusCode.PERMISSION_DENIED
        anonymous.close()
    assert len(admin.fetch_bytes(test)) == 2000  # full access
    job.close()


def test_a_forged_or_edited_credential_does_not_verify():
    token = mint(KEY, "job", ["a" * 64], 10)
    assert verify(KEY, token).may_read("a" * 64) and not verify(KEY, token).may_read("b" * 64)
    body, sig = token.split(".")
    with pytest.raises(ScopeError):
        verify(KEY, body[:-2] + "xx." + sig)


class Peeker(Approach):
    """A hostile approach: reaches past ctx.split for the test split's digest."""

    name, version, level = "peeker", "1.0.0", "neuron"
    fault_families = ("misclassification",)
    uses_torch = False
    test_digest = None

    def repair(self, ctx):
        ctx._fetch(Peeker.test_digest)
        return Outcome(model=ctx.model)


def test_a_service_asking_for_the_test_split_is_denied_and_recorded(scoped_store, tmp_path):
    server, disk, admin = scoped_store
    w = np.eye(4, 3, dtype=np.float32)
    model = admin.upload_bytes(dense_classifier(w, np.zeros(3, np.float32)).SerializeToString())
    x, y = blob_dataset(0)
    repair = admin.upload_bytes(npz_bytes({"x": x, "y": y}))
    Peeker.test_digest = admin.upload_bytes(npz_bytes({"x": x[:50], "y": y[:50]}))
    servicer = RepairServicer(Peeker, server.address, str(tmp_path / "svc-cache"))
    service = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])
    job = repair_pb2.RepairJob(job_id="j" * 64, model=model, params=struct_pb2.Struct(), seed=0,
                               budget=repair_pb2.Budget(wall_seconds=30),
                               data=repair_pb2.DatasetRef(repair=repair, input_shape=[4], num_classes=3),
                               store_credential=mint(KEY, "j" * 64, [model.sha256, repair.sha256], 10**7))
    try:
        with channel(service.address) as ch:
            events = list(repair_pb2_grpc.RepairStub(ch).Fix(repair_pb2.FixRequest(job=job), timeout=60))
    finally:
        service.stop(0)
    result = events[-1].result
    assert result.status == repair_pb2.REPAIR_STATUS_TOOL_ERROR and "PERMISSION_DENIED" in result.message
    (record,) = _denied(disk)
    assert record["job"] == "j" * 64 and Peeker.test_digest.sha256[:12] in record["call"]


def test_the_key_file_is_waited_for_and_a_missing_one_is_named(tmp_path):
    import threading

    from fixbench.security.scope import KeyFileMissing, load_key, new_key_file

    path = tmp_path / "keys" / "store.key"
    with pytest.raises(KeyFileMissing, match="FIXBENCH_STORE_KEY_CREATE=1"):
        load_key({"FIXBENCH_STORE_KEY_FILE": str(path)})
    # under compose the store writes it at its start while the orchestrator already waits
    timer = threading.Timer(0.3, lambda: new_key_file(path, mode=0o644))
    timer.start()
    try:
        key = load_key({"FIXBENCH_STORE_KEY_FILE": str(path), "FIXBENCH_STORE_KEY_WAIT": "30"})
    finally:
        timer.join()
    assert key == path.read_bytes().strip() and len(key) == 64
    assert (path.stat().st_mode & 0o777) == 0o644
    assert new_key_file(path).read_bytes().strip() == key  # an existing key is kept
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_the_store_makes_its_key_when_asked_and_then_requires_credentials(tmp_path):
    """`python -m fixbench.artifacts` with FIXBENCH_STORE_KEY_CREATE=1 (compose): the key file
    appears, and a call without a signed credential is refused."""
    import subprocess
    import sys

    from fixbench.security.scope import load_key
    from fixbench.v1 import artifacts_pb2
    from fixbench.v1.common_pb2 import Digest

    key_file = tmp_path / "keys" / "store.key"
    port_file = tmp_path / "port"
    env = {**os.environ, "FIXBENCH_STORE_KEY_FILE": str(key_file), "FIXBENCH_STORE_KEY_CREATE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "fixbench.artifacts", "--root", str(tmp_path / "store"),
                             "--port-file", str(port_file)], env=env, stdin=subprocess.DEVNULL)
    try:
        import time

        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            assert proc.poll() is None and time.monotonic() < deadline, "the store did not start"
            time.sleep(0.1)
        key = load_key({"FIXBENCH_STORE_KEY_FILE": str(key_file)})
        address = f"127.0.0.1:{port_file.read_text().strip()}"
        with channel(address) as ch:
            stub = artifacts_pb2_grpc.ArtifactsStub(ch)
            request = artifacts_pb2.DownloadRequest(digest=Digest(sha256="0" * 64, size_bytes=1))
            with pytest.raises(grpc.RpcError) as refused:
                list(stub.Download(request, timeout=10))
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            scoped = (("x-fixbench-scope", full_access(key, "orchestrator")),)
            with pytest.raises(grpc.RpcError) as missing:
                list(stub.Download(request, timeout=10, metadata=scoped))
            assert missing.value.code() == grpc.StatusCode.NOT_FOUND  # with the key's credential: just not there
    finally:
        proc.terminate()
        proc.wait(timeout=30)
