"""Container tier: `fixbench new-approach --wrap` on a local git repository that plays an
original tool (tests/wrapping/toytool.py, its own pinned stack) gives an image that installs the
tool from that repository at the pinned commit into /opt/tool and, running as a container,
passes the conformance suite. Builds only the layers it needs (base, sdk), not all of compose."""

from __future__ import annotations

import importlib.util
import shutil
import socket
import subprocess
import uuid

import pytest

from fixbench.conformance import run_conformance, start_store
from fixbench.grpcutil import wait_healthy
from orchestrator.cli_scaffold import new_wrapped_approach
from tests.container.dockerutil import REPO_ROOT, TAG, run

pytestmark = pytest.mark.container
SDK_IMAGE = f"fixbench/sdk:{TAG}"


def _toytool():
    spec = importlib.util.spec_from_file_location("fixbench_toytool", REPO_ROOT / "tests" / "wrapping" / "toytool.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sdk_layer(compose_env: dict[str, str]) -> str:
    run(["docker", "compose", "-p", f"fixbench-wrap-build-{uuid.uuid4().hex[:6]}", "build", "base", "sdk"],
        env=compose_env, timeout=1800)
    return SDK_IMAGE


def test_wrapped_tool_image_builds_and_conforms(sdk_layer, tmp_path):
    toy = _toytool()
    repo, commit = toy.make_tool_repo(tmp_path)
    (tmp_path / "services").mkdir()
    folder = new_wrapped_approach("toyfix-wrap", str(repo), "onnx", commit, toy.ENTRY, dest=tmp_path / "services")
    # The build cannot reach this machine's files: a bare clone goes in the build context.
    subprocess.run(["git", "clone", "-q", "--bare", str(repo), str(folder / "tool-src" / "toyfix.git")], check=True)
    project = f"fixbench-wrap-{uuid.uuid4().hex[:8]}"
    image = f"{project}/toyfix-wrap:test"
    tool_repo = "/app/services/toyfix-wrap/tool-src/toyfix.git"
    (tmp_path / "compose.yaml").write_text(
        f"name: {project}\nservices:\n  toyfix-wrap:\n    image: {image}\n    build:\n      context: .\n"
        f"      dockerfile: services/toyfix-wrap/Dockerfile\n      args: {{SDK_IMAGE: \"{sdk_layer}\", "
        f"TOOL_REPO: \"{tool_repo}\", TOOL_COMMIT: \"{commit}\"}}\n")
    shutil.rmtree(repo)  # nothing outside the build context may be needed
    built = subprocess.run(["docker", "compose", "build"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    store = start_store(tmp_path / "store")
    port = _free_port()
    started = _docker("run", "-d", "--rm", "--network", "host", "-e", "FIXBENCH_HOST=127.0.0.1", "-e",
                      f"FIXBENCH_PORT={port}", "-e", f"FIXBENCH_STORE={store.address}", image)
    container = started.stdout.strip()
    try:
        assert started.returncode == 0, started.stderr
        # The tool's own stack and pinned commit, apart from the SDK's.
        pinned = _docker("exec", container, "cat", "/opt/tool/TOOL_COMMIT").stdout
        assert commit in pinned
        versions = _docker("exec", container, "/opt/tool/bin/python", "-c",
                           "import onnxruntime; print(onnxruntime.__version__)").stdout.strip()
        assert versions == "1.23.2"
        wait_healthy(f"127.0.0.1:{port}", timeout=120)
        report = run_conformance(f"127.0.0.1:{port}", store.address)
        logs = _docker("logs", "--tail", "30", container).stderr
        assert report.ok, f"{[(c.name, c.detail) for c in report.failures]}\n{logs}"
        assert "REPAIRED" in report.by_name()["fix-stream"].detail
        assert _docker("exec", container, "id", "-u").stdout.strip() != "0"
        size = _docker("image", "inspect", "-f", "{{.Size}}", image).stdout.strip()
        print(f"wrapped image {image}: {int(size) / 1e6:.0f} MB")
    finally:
        if container:
            _docker("stop", "-t", "2", container)
        store.stop(0)
        _docker("image", "rm", "-f", image)
