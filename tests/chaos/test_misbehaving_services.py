"""Raw misbehaving Repair servicers (written here, not with the SDK, to break the contract
the SDK keeps) against the real Scheduler, Ledger, store and evaluator on loopback:

- hang: Fix accepts the job and never sends an event. The orchestrator's deadline on the
  Fix stream (budget + margin) fires and the job is recorded as TIMEOUT, not retried: the
  service had its whole budget, and a retry would hang the same way. (A hanging Check is
  different — it is cheap by contract, so its deadline means an unhealthy service: INFRA,
  retried.)
- garbage: Fix streams events but never a result, or bytes that are not a FixResponse.
  Both are infrastructure failures (the same signature as a service dying mid-job): retried
  with backoff, then released as INFRA_ERROR (pending), with the reason in the ledger.
- phantom digest: Fix reports REPAIRED with a model digest it never uploaded. The evaluator
  finds no blob and answers CORRUPTED_OUTPUT, which becomes the job's status.
- full disk: the store's quota or a full tmpfs → RESOURCE_EXHAUSTED, nothing half-written.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
import uuid

import grpc
import pytest

from evaluator.service import EvaluatorServicer
from fixbench.artifacts.client import ArtifactClient, ArtifactError
from fixbench.artifacts.disk import DiskStore
from fixbench.artifacts.server import ArtifactsServicer
from fixbench.grpcutil import Server
from fixbench.v1 import artifacts_pb2_grpc, evaluator_pb2_grpc, repair_pb2, repair_pb2_grpc
from fixbench.v1.common_pb2 import Digest
from orchestrator import scheduler as scheduler_module
from tests.chaos.harness import run_jobs, study_spec, tiny_fault

S = repair_pb2.RepairStatus


class Counting(repair_pb2_grpc.RepairServicer):
    """Describe and Check behave; Fix is what each subclass breaks. Counts Fix calls."""

    def __init__(self):
        self.fix_calls = 0
        self._lock = threading.Lock()

    def Describe(self, request, context):
        return repair_pb2.DescribeResponse(name="noop", version="1.0.0")

    def Check(self, request, context):
        return repair_pb2.CheckResponse(adaptable=True)

    def count(self) -> None:
        with self._lock:
            self.fix_calls += 1


class Hangs(Counting):
    def Fix(self, request, context):
        self.count()
        while context.is_active():  # never a byte; leaves when the caller's deadline cancels it
            time.sleep(0.05)
        return iter(())


class StreamsWithoutResult(Counting):
    def Fix(self, request, context):
        self.count()
        for i in range(5):
            yield repair_pb2.FixResponse(progress=repair_pb2.Progress(fraction=i / 5, stage="pretending"))
            yield repair_pb2.FixResponse(log="x" * 1000)
        yield repair_pb2.FixResponse()  # an event with no field set at all


class PhantomDigest(Counting):
    def Fix(self, request, context):
        self.count()
        ghost = Digest(sha256=uuid.uuid4().hex * 2, size_bytes=4242)  # never uploaded
        yield repair_pb2.FixResponse(result=repair_pb2.RepairResult(status=S.REPAIR_STATUS_REPAIRED,
                                                                    repaired_model=ghost))


def garbage_bytes_handler(counter: Counting) -> grpc.GenericRpcHandler:
    """Fix answers with bytes that do not decode as FixResponse (serializer bypassed)."""

    def fix(request, context):
        counter.count()
        yield b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01 not a protobuf"

    def check(request, context):
        return repair_pb2.CheckResponse(adaptable=True).SerializeToString()

    return grpc.method_handlers_generic_handler("fixbench.v1.Repair", {
        "Fix": grpc.unary_stream_rpc_method_handler(fix, request_deserializer=None, response_serializer=None),
        "Check": grpc.unary_unary_rpc_method_handler(check, request_deserializer=None, response_serializer=None),
    })


@pytest.fixture
def platform(tmp_path):
    disk = DiskStore(tmp_path / "store", max_blob_bytes=1 << 20)
    store = Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(disk), s)],
                   ["Artifacts"])
    evaluator = Server([lambda s: evaluator_pb2_grpc.add_EvaluatorServicer_to_server(
        EvaluatorServicer(store.address, str(tmp_path / "evaluator-cache")), s)], ["Evaluator"])
    client = ArtifactClient(store.address, tmp_path / "client-cache", timeout=30)
    fault = tiny_fault(client)
    yield {"store": store, "evaluator": evaluator, "fault": fault, "tmp": tmp_path}
    client.close()
    evaluator.stop(0)
    store.stop(0)


def serve(servicer: Counting | None = None, generic: grpc.GenericRpcHandler | None = None) -> Server:
    register = [lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)] if servicer else \
        [lambda s: s.add_generic_rpc_handlers((generic,))]
    return Server(register, ["Repair"])


def report(scenario: str, figures, calls: int) -> None:
    print(f"chaos {scenario}: jobs {figures.jobs}, Fix calls {calls}, statuses {figures.statuses}, "
          f"infra retries {figures.infra_errors}, lost {figures.lost}, duplicated {figures.duplicated}")


def test_hanging_service_times_out_once(platform, monkeypatch):
    monkeypatch.setattr(scheduler_module, "STREAM_MARGIN_SECONDS", 1.0)
    hang = Hangs()
    server = serve(hang)
    try:
        started = time.monotonic()
        figures = run_jobs(study_spec("noop", seeds=2, wall_seconds=1.0), platform["fault"], platform["tmp"] / "l.sqlite",
                           server.address, platform["evaluator"].address)
        elapsed = time.monotonic() - started
    finally:
        server.stop(0)
    report("hang", figures, hang.fix_calls)
    assert figures.statuses == {"TIMEOUT": 2} and figures.done == 2 and hang.fix_calls == 2
    assert all("exceeded its deadline" in r["message"] for r in figures.rows)
    assert elapsed < 15 and figures.lost == 0 and figures.duplicated == 0


@pytest.mark.parametrize("scenario", ["events-without-result", "undecodable-bytes"])
def test_garbage_streams_are_retried_then_released(platform, scenario):
    counter = StreamsWithoutResult() if scenario == "events-without-result" else Counting()
    server = serve(counter) if scenario == "events-without-result" else serve(generic=garbage_bytes_handler(counter))
    try:
        figures = run_jobs(study_spec("noop", seeds=2, attempts=3), platform["fault"], platform["tmp"] / "l.sqlite",
                           server.address, platform["evaluator"].address)
    finally:
        server.stop(0)
    report(scenario, figures, counter.fix_calls)
    assert figures.statuses == {"INFRA_ERROR": 2} and figures.done == 0
    assert counter.fix_calls == 6 and figures.infra_errors == 6  # 3 attempts per job, no more
    assert all(r["state"] == "pending" for r in figures.rows)  # a later run takes them again
    assert figures.lost == 0 and figures.duplicated == 0


def test_phantom_digest_is_corrupted_output(platform):
    phantom = PhantomDigest()
    server = serve(phantom)
    try:
        figures = run_jobs(study_spec("noop", seeds=3), platform["fault"], platform["tmp"] / "l.sqlite",
                           server.address, platform["evaluator"].address)
    finally:
        server.stop(0)
    report("phantom digest", figures, phantom.fix_calls)
    assert figures.statuses == {"CORRUPTED_OUTPUT": 3} and phantom.fix_calls == 3
    assert all("never uploaded" in r["message"] for r in figures.rows)
    assert figures.lost == 0 and figures.duplicated == 0


def fill(store_root, address: str, cache) -> tuple[int, ArtifactError]:
    """Uploads distinct 256 KiB blobs until the store refuses one; returns (stored, error)."""
    stored = 0
    with ArtifactClient(address, cache, timeout=30) as client:
        for i in range(200):
            try:
                client.upload_bytes(os.urandom(256 * 1024 - 1) + bytes([i]))
                stored += 1
            except ArtifactError as exc:
                return stored, exc
    raise AssertionError("the store never filled up")


def assert_nothing_half_written(root) -> None:
    assert not list((root / "tmp").iterdir()), "a refused upload left a temp file"
    for blob in (root / "blobs").rglob("*"):
        if blob.is_file():
            assert blob.stat().st_size == 256 * 1024, f"partial blob {blob}"


def test_store_quota_full_is_resource_exhausted(tmp_path):
    disk = DiskStore(tmp_path / "store", max_blob_bytes=1 << 20, max_total_bytes=1 << 20)
    server = Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(disk), s)],
                    ["Artifacts"])
    try:
        stored, err = fill(disk.root, server.address, tmp_path / "cache")
    finally:
        server.stop(0)
    print(f"chaos store quota (1 MiB): {stored} blobs stored, then {err.code.name}: {err}")
    assert stored == 4 and err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "of its 1048576 bytes" in str(err)
    assert_nothing_half_written(disk.root)
    assert DiskStore(disk.root, max_total_bytes=1 << 20).used_bytes() == 4 * 256 * 1024  # a restart counts the same


def test_full_disk_is_resource_exhausted(tmp_path):
    """A real full file system: a 1.2 MiB tmpfs (needs root; skipped where mounting is not allowed)."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        disk = DiskStore(mount / "store", max_blob_bytes=1 << 20)  # no quota: the disk itself fills
        server = Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(disk), s)],
                        ["Artifacts"])
        try:
            stored, err = fill(disk.root, server.address, tmp_path / "cache")
        finally:
            server.stop(0)
        print(f"chaos full disk (1.2 MiB tmpfs): {stored} blobs stored, then {err.code.name}: {err}")
        assert err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and ("disk" in str(err))
        assert 1 <= stored <= 4
        assert_nothing_half_written(disk.root)
    finally:
        subprocess.run(["umount", str(mount)], check=True)
