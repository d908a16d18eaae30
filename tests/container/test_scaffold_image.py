"""Container tier: a scaffolded approach builds on the SDK image (one thin layer) and, running
as a container, passes the conformance suite unchanged. Needs a Docker engine with Compose v2
and the fixbench/sdk image, which the tier's `images` fixture builds."""

from __future__ import annotations

import socket
import subprocess
import uuid

import pytest

from fixbench.conformance import run_conformance, start_store
from fixbench.grpcutil import wait_healthy
from orchestrator.cli_scaffold import new_approach
from tests.container.dockerutil import TAG

pytestmark = pytest.mark.container
SDK_IMAGE = f"fixbench/sdk:{TAG}"


def _docker(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_scaffolded_image_builds_and_conforms(images, tmp_path):
    # A build context of its own: the new service folder only, as services/NAME in the repo.
    (tmp_path / "services").mkdir()
    new_approach("scaffold-check", dest=tmp_path / "services")
    project = f"fixbench-scaffold-{uuid.uuid4().hex[:8]}"
    image = f"{project}/scaffold-check:test"
    (tmp_path / "compose.yaml").write_text(
        f"name: {project}\nservices:\n  scaffold-check:\n    image: {image}\n    build:\n      context: .\n"
        f"      dockerfile: services/scaffold-check/Dockerfile\n      args: {{SDK_IMAGE: \"{SDK_IMAGE}\"}}\n"
    )
    built = subprocess.run(["docker", "compose", "build"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    store = start_store(tmp_path / "store")
    port = _free_port()
    # Host networking: the container reaches this process's store on loopback.
    run = _docker("run", "-d", "--rm", "--network", "host", "-e", "FIXBENCH_HOST=127.0.0.1", "-e", f"FIXBENCH_PORT={port}",
                  "-e", f"FIXBENCH_STORE={store.address}", image)
    container = run.stdout.strip()
    try:
        assert run.returncode == 0, run.stderr
        wait_healthy(f"127.0.0.1:{port}", timeout=120)
        report = run_conformance(f"127.0.0.1:{port}", store.address)
        logs = _docker("logs", "--tail", "20", container).stderr
        assert report.ok, f"{[(c.name, c.detail) for c in report.failures]}\n{logs}"
        assert "then REPAIRED" in report.by_name()["fix-stream"].detail
        # The image runs as the non-root user of the base layer.
        assert _docker("exec", container, "id", "-u").stdout.strip() != "0"
    finally:
        if container:
            _docker("stop", "-t", "2", container)
        store.stop(0)
        _docker("image", "rm", "-f", image)
