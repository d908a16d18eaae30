"""The hostile input corpus against the library and the running services: every hostile
model, split, protobuf message, upload and study spec gets a named status and a clear
message; no service dies, nothing is written outside the store, nothing is unpickled, and
memory stays bounded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from evaluator.service import EvaluatorServicer
from fixbench.arrays import SplitFormatError, load_split, npz_bytes
from fixbench.artifacts.digest import digest_of_bytes
from fixbench.grpcutil import MAX_MESSAGE_BYTES, Server, channel
from fixbench.onnxio import InvalidModelError, load_model
from fixbench.sdk import Approach, Outcome
from fixbench.sdk.server import RepairServicer
from fixbench.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    evaluator_pb2,
    evaluator_pb2_grpc,
    repair_pb2,
    repair_pb2_grpc,
)
from fixbench.v1.common_pb2 import Digest
from orchestrator.spec import SpecError, load_spec
from tests.conftest import blob_dataset
from tests.hostile.corpus import PWNED, hostile_models, hostile_splits

ROOT = Path(__file__).resolve().parents[2]
MODELS = hostile_models()
SPLITS = hostile_splits()
E = evaluator_pb2.EvaluationStatus


class Passthrough(Approach):
    """Hands the model back: the hostile part is the input, not the approach."""

    name, version, level = "passthrough", "1.0.0", "baseline"
    needs = ()
    uses_torch = False

    def repair(self, ctx):
        return Outcome(model=ctx.model_bytes, not_repaired=True)


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


@pytest.fixture(autouse=True)
def nothing_unpickled():
    Path(PWNED).unlink(missing_ok=True)
    yield
    assert not Path(PWNED).exists(), "a hostile pickle was executed"


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hostile_model_is_refused_by_name(name):
    data, phrase = MODELS[name]
    with pytest.raises(InvalidModelError) as err:
        load_model(data)
    assert phrase in str(err.value), str(err.value)


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_hostile_split_is_refused_by_name(name):
    data, phrase = SPLITS[name]
    with pytest.raises(SplitFormatError) as err:
        load_split(data)
    assert phrase in str(err.value), str(err.value)


def test_corpus_stays_within_a_memory_limit():
    """The whole corpus in a child whose data segment is capped at 768 MiB: every input is
    refused and the child's peak RSS is printed (a model that allocated what it declares
    would die of MemoryError here instead)."""
    code = textwrap.dedent("""
        import json, resource, sys
        resource.setrlimit(resource.RLIMIT_DATA, (768 << 20, 768 << 20))
        import importlib.util
        sys.path.insert(0, sys.argv[1])
        # by path: the venv holds an unrelated top-level "tests" package
        spec = importlib.util.spec_from_file_location("corpus", sys.argv[1] + "/tests/hostile/corpus.py")
        corpus = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(corpus)
        hostile_models, hostile_splits = corpus.hostile_models, corpus.hostile_splits
        from fixbench.onnxio import InvalidModelError, load_model
        from fixbench.arrays import SplitFormatError, load_split
        refused = 0
        models, splits = hostile_models(), hostile_splits()
        for data, _ in models.values():
            try:
                load_model(data)
            except InvalidModelError:
                refused += 1
        for data, _ in splits.values():
            try:
                load_split(data)
            except SplitFormatError:
                refused += 1
        # VmHWM belongs to this image (ru_maxrss would include the forking parent's pages)
        hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:"))
        rss = int(hwm.split()[1]) / 1024
        print(json.dumps({"inputs": len(models) + len(splits), "refused": refused, "peak_rss_mb": rss}))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=120,
                          env=env, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"hostile corpus in a 768 MiB child: {figures['inputs']} inputs, {figures['refused']} refused, "
          f"peak RSS {figures['peak_rss_mb']:.0f} MiB")
    assert figures["refused"] == figures["inputs"] == len(MODELS) + len(SPLITS)
    assert figures["peak_rss_mb"] < 768


@pytest.fixture
def platform(tmp_path):
    """A store (1 MiB blobs), a repair service and an evaluator, all on loopback."""
    from fixbench.artifacts.client import ArtifactClient
    from fixbench.artifacts.disk import DiskStore
    from fixbench.artifacts.server import ArtifactsServicer

    disk = DiskStore(tmp_path / "store", max_blob_bytes=1 << 20)
    store = Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(disk), s)],
                   ["Artifacts"])
    repair = RepairServicer(Passthrough, store.address, str(tmp_path / "repair-cache"))
    repair_server = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(repair, s)], ["Repair"])
    evaluator = EvaluatorServicer(store.address, str(tmp_path / "evaluator-cache"))
    evaluator_server = Server([lambda s: evaluator_pb2_grpc.add_EvaluatorServicer_to_server(evaluator, s)],
                              ["Evaluator"])
    client = ArtifactClient(store.address, tmp_path / "client-cache", timeout=30)
    yield {"store": store, "repair": repair_server, "evaluator": evaluator_server, "client": client, "disk": disk,
           "root": tmp_path}
    client.close()
    for server in (evaluator_server, repair_server, store):
        server.stop(0)


def healthy(address: str) -> bool:
    with channel(address) as ch:
        return health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status == \
            health_pb2.HealthCheckResponse.SERVING


def evaluate(address: str, request: evaluator_pb2.EvaluateRequest) -> evaluator_pb2.EvaluationResult:
    with channel(address) as ch:
        events = list(evaluator_pb2_grpc.EvaluatorStub(ch).Evaluate(request, timeout=60))
    return events[-1].result


def test_hostile_models_and_splits_through_the_services(platform, tiny_model):
    client, root = platform["client"], platform["root"]
    before = files_under(root) - files_under(root / "store") - files_under(root / "client-cache")
    x, y = blob_dataset(1, n=30)
    test = client.upload_bytes(npz_bytes({"x": x, "y": y}))
    good = client.upload_bytes(tiny_model.SerializeToString())
    with channel(platform["repair"].address) as ch:
        stub = repair_pb2_grpc.RepairStub(ch)
        for name, (data, phrase) in MODELS.items():
            digest = client.upload_bytes(data)
            job = repair_pb2.RepairJob(job_id=f"hostile-{name}", model=digest, seed=0,
                                       budget=repair_pb2.Budget(wall_seconds=10))
            with pytest.raises(grpc.RpcError) as err:
                reply = stub.Check(repair_pb2.CheckRequest(job=job), timeout=30)
                pytest.fail(f"{name}: Check answered {reply}")
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and phrase in err.value.details(), name
            # as the original model the evaluator refuses the request ...
            with pytest.raises(grpc.RpcError) as err:
                evaluate(platform["evaluator"].address,
                         evaluator_pb2.EvaluateRequest(job_id=name, original_model=digest, test=test))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and phrase in err.value.details(), name
            # ... as the repaired model it is the approach's corrupted output
            result = evaluate(platform["evaluator"].address,
                              evaluator_pb2.EvaluateRequest(job_id=name, original_model=good, repaired_model=digest,
                                                            test=test))
            assert result.status == E.EVALUATION_STATUS_CORRUPTED_OUTPUT and phrase in result.message, name
    for name, (data, phrase) in SPLITS.items():
        with pytest.raises(grpc.RpcError) as err:
            evaluate(platform["evaluator"].address,
                     evaluator_pb2.EvaluateRequest(job_id=name, original_model=good, test=client.upload_bytes(data)))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and phrase in err.value.details(), name
    for service in ("store", "repair", "evaluator"):
        assert healthy(platform[service].address), service
    after = files_under(root) - files_under(root / "store") - files_under(root / "client-cache")
    written = {p for p in after - before if "cache" not in p.relative_to(root).parts[0]}
    print(f"hostile inputs through the services: {len(MODELS)} models x (Check, Evaluate original, Evaluate "
          f"repaired) + {len(SPLITS)} splits, all refused with a named status; 0 crashes; "
          f"{len(written)} files written outside the store and caches")
    assert not written


def raw_call(address: str, method: str, payload: bytes, streaming_request: bool = False, limit: int | None = None):
    """Sends `payload` as-is (no protobuf encoding) — what a broken or hostile peer can send."""
    options = [("grpc.max_send_message_length", limit or MAX_MESSAGE_BYTES * 4)]
    with grpc.insecure_channel(address, options=options) as ch:
        if streaming_request:
            call = ch.stream_unary(method)
            return call(iter([payload]), timeout=10)
        if method.endswith(("Download", "Fix", "Evaluate")):
            return list(ch.unary_stream(method)(payload, timeout=10))
        return ch.unary_unary(method)(payload, timeout=10)


@pytest.mark.parametrize("method,streaming", [
    ("/fixbench.v1.Artifacts/Stat", False), ("/fixbench.v1.Artifacts/Upload", True),
    ("/fixbench.v1.Artifacts/Download", False), ("/fixbench.v1.Repair/Check", False),
    ("/fixbench.v1.Repair/Fix", False), ("/fixbench.v1.Evaluator/Evaluate", False),
])
def test_malformed_and_oversized_messages(platform, method, streaming):
    service = {"Artifacts": "store", "Repair": "repair", "Evaluator": "evaluator"}[method.split(".")[2].split("/")[0]]
    address = platform[service].address
    garbage = b"\xff\xff\xff\xff\x0f" + bytes(range(256)) * 4  # an invalid varint, then noise
    with pytest.raises(grpc.RpcError) as err:
        raw_call(address, method, garbage, streaming)
    assert err.value.code() == grpc.StatusCode.INTERNAL and "deserializ" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        raw_call(address, method, b"\x0a" + b"\xff" * 9 + b"\x01" * (MAX_MESSAGE_BYTES + 1024), streaming)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert healthy(address)


def upload(address: str, messages: list[artifacts_pb2.UploadRequest]) -> grpc.RpcError:
    with channel(address) as ch:
        with pytest.raises(grpc.RpcError) as err:
            artifacts_pb2_grpc.ArtifactsStub(ch).Upload(iter(messages), timeout=10)
    return err.value


def test_store_refuses_hostile_uploads_and_downloads(platform):
    store, root = platform["store"].address, platform["root"]
    payload = b"x" * 1000
    real = digest_of_bytes(payload)
    cases = {
        "no digest first": ([artifacts_pb2.UploadRequest(data=payload)], grpc.StatusCode.INVALID_ARGUMENT, "name the digest"),
        "path as digest": ([artifacts_pb2.UploadRequest(digest=Digest(sha256="../../../../tmp/evil", size_bytes=4),
                                                        data=b"evil")], grpc.StatusCode.INVALID_ARGUMENT, "hex"),
        "negative size": ([artifacts_pb2.UploadRequest(digest=Digest(sha256=real.sha256, size_bytes=-1))],
                          grpc.StatusCode.INVALID_ARGUMENT, "negative"),
        "over the blob limit": ([artifacts_pb2.UploadRequest(digest=Digest(sha256=real.sha256, size_bytes=1 << 40))],
                                grpc.StatusCode.RESOURCE_EXHAUSTED, "exceeds the store limit"),
        "more than announced": ([artifacts_pb2.UploadRequest(digest=Digest(sha256=real.sha256, size_bytes=10), data=payload)],
                                grpc.StatusCode.DATA_LOSS, "more than the announced"),
        "less than announced": ([artifacts_pb2.UploadRequest(digest=Digest(sha256=real.sha256, size_bytes=2000), data=payload)],
                                grpc.StatusCode.DATA_LOSS, "ended after 1000 of 2000"),
        "wrong hash": ([artifacts_pb2.UploadRequest(digest=Digest(sha256="ab" * 32, size_bytes=1000), data=payload)],
                       grpc.StatusCode.DATA_LOSS, "hash to"),
    }
    for name, (messages, code, phrase) in cases.items():
        err = upload(store, messages)
        assert err.code() == code and phrase in err.details(), (name, err.code(), err.details())
    with channel(store) as ch:
        stub = artifacts_pb2_grpc.ArtifactsStub(ch)
        for digest, offset, code in [(Digest(sha256="../etc/passwd", size_bytes=1), 0, grpc.StatusCode.INVALID_ARGUMENT),
                                     (Digest(sha256="cd" * 32, size_bytes=5), 0, grpc.StatusCode.NOT_FOUND)]:
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Download(artifacts_pb2.DownloadRequest(digest=digest, offset=offset), timeout=10))
            assert err.value.code() == code
        present = platform["client"].upload_bytes(payload)
        for offset in (-1, 1001):
            with pytest.raises(grpc.RpcError) as err:
                list(stub.Download(artifacts_pb2.DownloadRequest(digest=present, offset=offset), timeout=10))
            assert err.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert not list((root / "store" / "tmp").iterdir()), "a refused upload left a temp file"
    assert [p.name for p in (root / "store" / "blobs").rglob("*") if p.is_file()] == [present.sha256]
    assert not Path("/tmp/evil").exists()
    print(f"hostile store traffic: {len(cases) + 4} requests refused with named statuses, 0 files half-written")


@pytest.mark.parametrize("key,value,phrase", [
    ("name", "../../etc", "not a plain name"),
    ("name", "results/x", "not a plain name"),
    ("suite", "../../etc", "may hold only letters"),
    ("suite", "/etc/passwd", "may hold only letters"),
    ("approaches", [{"name": "../noop"}], "unknown approach '../noop'"),
    ("approaches", [{"name": "noop/../../x"}], "unknown approach"),
    ("approaches", [{"name": "noop", "memory_mb": 1}], "greater than or equal to 64"),
])
def test_study_spec_path_traversal_is_refused(tmp_path, key, value, phrase):
    spec = {"name": "ok", "suite": "quick", "seeds": [0], "approaches": [{"name": "noop"}],
            "budget": {"wall_seconds": 10}, key: value}
    path = tmp_path / "spec.yaml"
    path.write_text(json.dumps(spec))  # JSON is YAML
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert f"{key}" in str(err.value) and phrase in str(err.value), str(err.value)


def test_a_repaired_digest_that_names_no_blob_is_corrupted_output(platform, tiny_model):
    client = platform["client"]
    x, y = blob_dataset(2, n=20)
    test = client.upload_bytes(npz_bytes({"x": x, "y": y}))
    good = client.upload_bytes(tiny_model.SerializeToString())
    for never in (Digest(sha256="ef" * 32, size_bytes=123), Digest(sha256="../../etc/passwd", size_bytes=1)):
        result = evaluate(platform["evaluator"].address,
                          evaluator_pb2.EvaluateRequest(job_id="ghost", original_model=good, repaired_model=never, test=test))
        assert result.status == E.EVALUATION_STATUS_CORRUPTED_OUTPUT and "never uploaded" in result.message


def test_blob_limit_also_bounds_models_with_huge_valid_payloads(platform):
    """A model bigger than the store's blob limit never reaches a service."""
    big = np.zeros((1 << 20) // 4 + 1, np.float32).tobytes()
    from fixbench.artifacts.client import ArtifactError

    with pytest.raises(ArtifactError) as err:
        platform["client"].upload_bytes(big)
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
