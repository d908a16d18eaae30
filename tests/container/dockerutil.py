"""Helpers of the container tier: commands with captured output, image names, and compose
projects that tear down exactly what they started."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
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
DAEMON_CONFIG = Path("/etc/docker/daemon.json")
# A compose project makes one network per approach (27 today). Docker's default pools hold about
# 30 networks, fewer on a host whose own routes cover 172.16.0.0/12 or 192.168.0.0/16 (dockerd
# skips a pool that overlaps a route), so CI on such a host ran out half way through a project.
# /24s from three private ranges: dockerd skips a candidate that overlaps the host, not a range.
ADDRESS_POOLS = [
    {"base": "10.200.0.0/16", "size": 24},
    {"base": "172.28.0.0/14", "size": 24},
    {"base": "192.168.0.0/16", "size": 24},
]
POOL_HINT = (
    "Docker ran out of address pools for the project's networks (one per approach): take other "
    "projects down, or give dockerd more and smaller pools (docker/README.md, 'Networks per project')."
)


def tail(text: str, lines: int = 60) -> str:
    return "\n".join(text.splitlines()[-lines:])


def run(
    cmd: list[str], *, timeout: float, env: dict[str, str] | None = None, check: bool = True, cwd: Path = REPO_ROOT
) -> subprocess.CompletedProcess:
    """Runs a command, capturing text output; with `check`, a failure shows its output's tail.
    A Docker command that ran out of address pools gets POOL_HINT appended to its stderr."""
    proc = subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )
    if "non-overlapping IPv4 address pool" in proc.stderr:
        proc.stderr += "\n" + POOL_HINT
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail(proc.stdout)}\n{tail(proc.stderr)}"
        )
    return proc


def docker_running() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, stdin=subprocess.DEVNULL).returncode == 0


def give_engine_small_address_pools(config_path: Path = DAEMON_CONFIG) -> bool:
    """Before dockerd starts: adds ADDRESS_POOLS to its configuration unless it names pools of
    its own. Returns whether the file was changed. A running engine is left alone (restarting a
    daemon this tier did not start is not its business), and so is a file that does not parse."""
    config: dict = {}
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text() or "{}")
        except json.JSONDecodeError:
            print(f"{config_path} does not parse; its address pools are left as they are", file=sys.stderr)
            return False
    if not isinstance(config, dict) or "default-address-pools" in config:
        return False
    config["default-address-pools"] = ADDRESS_POOLS
    config_path.parent.mkdir(parents=True, exist_ok=True)
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    print(f"{config_path}: default-address-pools set to {len(ADDRESS_POOLS)} ranges of /24s", file=sys.stderr)
    return True


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
