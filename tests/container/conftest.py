"""Fixtures of the container tier: a Docker engine (the shared sandbox script), the images
built once per session, and one compose project per test.

The images are tagged `fixbench/*:ci` and kept after the session: they are the build cache
that keeps the next run fast. Containers, networks and volumes belong to one project each
and are removed with it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.container.dockerutil import (
    BENCH_DIR,
    REPO_ROOT,
    SANDBOX_SCRIPT,
    SERVICE_UID,
    TAG,
    ComposeProject,
    chown_tree,
    docker_running,
    give_engine_small_address_pools,
    run,
)


@pytest.fixture(scope="session")
def base_image() -> str:
    """The Debian Python base image, built by the sandbox script (which also starts Docker).

    FIXBENCH_CI_BASE_IMAGE names another base (e.g. python:3.11-slim-bookworm where a
    registry is reachable) and skips the script; Docker must then be running already."""
    override = os.environ.get("FIXBENCH_CI_BASE_IMAGE")
    if override:
        return override
    if not SANDBOX_SCRIPT.is_file():
        pytest.fail(f"the container tier needs {SANDBOX_SCRIPT} (or FIXBENCH_CI_BASE_IMAGE and a running Docker)")
    if os.geteuid() != 0:
        pytest.fail(f"{SANDBOX_SCRIPT.name} needs root to start Docker; run the container tier as root")
    if not docker_running():
        give_engine_small_address_pools()
    proc = run(["bash", str(SANDBOX_SCRIPT)], timeout=1800)
    return proc.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def compose_env(base_image: str) -> dict[str, str]:
    if BENCH_DIR.exists():
        if BENCH_DIR.stat().st_uid != SERVICE_UID:
            chown_tree(BENCH_DIR)
    else:
        BENCH_DIR.mkdir(parents=True)
        os.chown(BENCH_DIR, SERVICE_UID, SERVICE_UID)
    env = dict(os.environ)
    env.update(
        {
            "BASE_IMAGE": base_image,
            "FIXBENCH_TAG": TAG,
            "FIXBENCH_UID": str(SERVICE_UID),
            "FIXBENCH_GID": str(SERVICE_UID),
            "FIXBENCH_THREADS": "1",
            "FIXBENCH_BENCH_DIR": str(BENCH_DIR),
            "FIXBENCH_STUDY": "studies/compose-quick.yaml",
        }
    )
    return env


@pytest.fixture(scope="session")
def images(compose_env: dict[str, str]) -> str:
    """Builds every image of compose.yaml (base → sdk → … → services), once per session."""
    run([str(REPO_ROOT / "docker" / "prepare-context.sh")], timeout=300)
    run(["docker", "compose", "-p", f"fixbench-ci-build-{os.getpid()}", "build"], env=compose_env, timeout=1800)
    return TAG


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    """A results folder owned by the orchestrator's uid, like a host user's ./results."""
    path = tmp_path / "results"
    path.mkdir()
    os.chown(path, SERVICE_UID, SERVICE_UID)
    return path


@pytest.fixture
def project(images: str, compose_env: dict[str, str], results_dir: Path) -> Iterator[ComposeProject]:
    env = dict(compose_env, FIXBENCH_RESULTS_DIR=str(results_dir))
    proj = ComposeProject(f"fixbench-ci-{uuid.uuid4().hex[:8]}", env)
    try:
        yield proj
    finally:
        proj.down()
