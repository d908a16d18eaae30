"""`fixbench new-approach NAME --wrap REPO`: the scaffolded service installs a tool from a git
repository (a local one the test creates, with its own pinned stack) into an environment of its
own, passes the conformance suite as a local process, and maps the tool's exit and output to
statuses (no output -> NOT_REPAIRED, crash -> TOOL_ERROR with its last lines, over budget ->
TIMEOUT, cancellation kills it)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fixbench.artifacts.client import ArtifactClient
from fixbench.conformance import run_service_conformance, start_store
from fixbench.conformance.fixture import build_fixture, dataset_ref
from fixbench.grpcutil import Server, channel
from fixbench.sdk.server import RepairServicer
from fixbench.v1 import repair_pb2, repair_pb2_grpc
from orchestrator.cli_scaffold import ScaffoldError, new_wrapped_approach

S = repair_pb2.RepairStatus


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


toytool = _load(Path(__file__).with_name("toytool.py"), "fixbench_toytool")
ENTRY, make_tool_repo = toytool.ENTRY, toytool.make_tool_repo


@pytest.fixture(scope="module")
def wrapped(tmp_path_factory):
    root = tmp_path_factory.mktemp("wrap")
    repo, commit = make_tool_repo(root)
    (root / "services").mkdir()
    folder = new_wrapped_approach("toyfix-wrap", str(repo), "onnx", commit, ENTRY, dest=root / "services")
    prefix = root / "tool"
    subprocess.run([sys.executable, str(folder / "wrap.py"), "install", "--repo", str(repo), "--commit", commit,
                    "--prefix", str(prefix)], check=True, timeout=600, capture_output=True)
    old = os.environ.get("FIXBENCH_TOOL_PREFIX")
    os.environ["FIXBENCH_TOOL_PREFIX"] = str(prefix)
    yield folder, prefix, commit
    if old is None:
        os.environ.pop("FIXBENCH_TOOL_PREFIX", None)
    else:
        os.environ["FIXBENCH_TOOL_PREFIX"] = old


def test_scaffold_fills_every_file_and_pins_the_commit(wrapped):
    folder, prefix, commit = wrapped
    assert {"approach.py", "wrap.py", "Dockerfile", "service.toml", "README.md", "requirements.txt",
            "test_conformance.py"} <= {p.name for p in folder.iterdir()}
    assert f"ARG TOOL_COMMIT={commit}" in (folder / "Dockerfile").read_text()
    assert 'layer = "sdk"' in (folder / "service.toml").read_text()
    assert "| `args` |" in (folder / "README.md").read_text() or "args" in (folder / "README.md").read_text()
    # The tool sits in its own environment, on its own pins, at the pinned commit.
    assert commit in (prefix / "TOOL_COMMIT").read_text()
    out = subprocess.run([str(prefix / "bin" / "python"), "-c", "import onnxruntime; print(onnxruntime.__version__)"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "1.23.2"


def test_scaffold_refuses_bad_wrap_arguments(tmp_path):
    with pytest.raises(ScaffoldError, match="framework"):
        new_wrapped_approach("x-wrap", "/some/repo", "jax", dest=tmp_path)
    with pytest.raises(ScaffoldError, match="one word"):
        new_wrapped_approach("x-wrap", "repo with space", "onnx", dest=tmp_path)
    assert not (tmp_path / "x-wrap").exists()


def test_wrapped_service_conforms_as_a_local_process(wrapped):
    folder, _, _ = wrapped
    report = run_service_conformance(folder)
    failures = "\n".join(f"{c.name}: {c.detail}" for c in report.failures)
    assert report.ok, f"{report.summary()}\n{failures}\n{report.log_tail}"
    assert "REPAIRED" in report.by_name()["fix-stream"].detail


@pytest.fixture(scope="module")
def served(wrapped, tmp_path_factory):
    folder, _, _ = wrapped
    root = tmp_path_factory.mktemp("served")
    sys.path.insert(0, str(folder))
    try:
        module = _load(folder / "approach.py", "toyfix_wrap_approach")
    finally:
        sys.path.remove(str(folder))
    store = start_store(root / "store")
    servicer = RepairServicer(module.ToyfixWrapApproach, store.address, root / "cache")
    repair = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])
    client = ArtifactClient(store.address, root / "client")
    fixture = build_fixture()
    digests = {name: client.upload_bytes(blob) for name, blob in fixture.splits.items()}
    model = client.upload_bytes(fixture.model)
    ch = channel(repair.address)
    yield repair_pb2_grpc.RepairStub(ch), model, dataset_ref(fixture, digests)
    ch.close()
    client.close()
    repair.stop(0)
    store.stop(0)


def _job(served, job_id, args="", budget=60.0):
    _, model, data = served
    job = repair_pb2.RepairJob(job_id=job_id, fault_id="wrap", fault_family="misclassification", model=model,
                               data=data, seed=1, budget=repair_pb2.Budget(wall_seconds=budget))
    if args:
        job.params.update({"args": args})
    return job


def _result(served, job):
    result = None
    for event in served[0].Fix(repair_pb2.FixRequest(job=job), timeout=120):
        if event.WhichOneof("event") == "result":
            result = event.result
    assert result is not None
    return result


def test_no_output_is_not_repaired(served):
    result = _result(served, _job(served, "nothing", "--behave nothing"))
    assert result.status == S.REPAIR_STATUS_NOT_REPAIRED and "nothing to recalibrate" in result.message


def test_a_crash_is_a_tool_error_with_the_last_log_lines(served):
    result = _result(served, _job(served, "crash", "--behave crash"))
    assert result.status == S.REPAIR_STATUS_TOOL_ERROR
    assert "status 3" in result.message and "gradient exploded at step 3" in result.message


def test_over_budget_is_a_timeout_and_the_tool_is_killed(served):
    started = time.monotonic()
    result = _result(served, _job(served, "hang", "--behave hang", budget=3.0))
    assert result.status == S.REPAIR_STATUS_TIMEOUT and "3 s budget" in result.message
    assert time.monotonic() - started < 20
    left = subprocess.run(["pgrep", "-f", "toyfix.*--behave hang"], capture_output=True, text=True).stdout.split()
    assert not left, f"the tool outlived its job: pids {left}"


def test_cancellation_kills_the_tool(served):
    stub = served[0]
    call = stub.Fix(repair_pb2.FixRequest(job=_job(served, "cancel", "--behave hang", budget=60.0)), timeout=60)
    next(call)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not subprocess.run(["pgrep", "-f", "toyfix.*--behave hang"],
                                                             capture_output=True).stdout:
        time.sleep(0.2)
    call.cancel()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and subprocess.run(["pgrep", "-f", "toyfix.*--behave hang"],
                                                         capture_output=True).stdout:
        time.sleep(0.2)
    assert not subprocess.run(["pgrep", "-f", "toyfix.*--behave hang"], capture_output=True).stdout
