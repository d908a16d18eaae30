"""Helpers of the container tier: commands with captured output, image names, and compose
projects that tear down exactly what they started."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SANDBOX_SCRIPT = REPO_ROOT.parent / "shared" / "recipes" / "docker-sandbox.sh"
TAG = "ci"
# The uid of the `fixbench` user in docker/base.Dockerfile; the orchestrator runs as it here
# so that the test's results folder plays the part of a host user's folder.
SERVICE_UID = 10001
# Faults built by the orchestrator container, reused by every later run of the tier.
BENCH_DIR = REPO_ROOT / ".fixbench" / "bench-container"


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run(
    cmd: list[str], *, timeout: float, env: dict[str, str] | None = None, check: bool = True, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess:
    """Runs a command, capturing text output; with `check`, a failure shows its output's tail."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail(proc.stdout)}\n{tail(proc.stderr)}"
        )
    return proc


def study_services(study: str) -> list[str]:
    """What `docker compose up` must start for a study: the orchestrator (which brings the store
    and evaluator) and the approaches the study names, not every approach of the project."""
    spec = yaml.safe_load((REPO_ROOT / study).read_text())
    return ["orchestrator", *sorted({entry["name"] for entry in spec["approaches"]})]


def image(name: str) -> str:
    return f"fixbench/{name}:{TAG}"


def chown_tree(root: Path) -> None:
    """Gives a folder tree to the service uid (the orchestrator writes there)."""
    os.chown(root, SERVICE_UID, SERVICE_UID)
    for path in root.rglob("*"):
        os.chown(path, SERVICE_UID, SERVICE_UID, follow_symlinks=False)


class ComposeProject:
    """One compose project (its own containers, network and store volume)."""

    def __init__(self, name: str, env: dict[str, str]):
        self.name = name
        self.env = env

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return run(["docker", "compose", "-p", self.name, *args], env=self.env, timeout=timeout, check=check)

    def up_study(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        """`docker compose up <args>` for the study in FIXBENCH_STUDY, starting only its services."""
        return self("up", *args, *study_services(self.env["FIXBENCH_STUDY"]), timeout=timeout, check=check)

    def container(self, service: str, index: int = 1) -> str:
        return f"{self.name}-{service}-{index}"

    def down(self) -> None:
        self("down", "--volumes", "--remove-orphans", "--timeout", "5", timeout=300, check=False)
