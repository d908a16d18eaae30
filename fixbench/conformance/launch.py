"""What the suite starts for itself when it is given a service folder instead of an address:
an in-process artifact store and the service as a local process pointed at that store, in
the service's own environment (fixbench.catalog.environments) when the folder has a
service.toml, as the local runtime runs it. Processes start and stop through the one
launcher (fixbench.launcher) the local runtime uses too."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from fixbench.artifacts.disk import DiskStore
from fixbench.artifacts.server import ArtifactsServicer
from fixbench.catalog import load_manifest
from fixbench.catalog.environments import Environments, ServiceEnvironmentError
from fixbench.grpcutil import Server
from fixbench.launcher import LaunchError, spawn, stop_group, tail, wait_for_address
from fixbench.v1 import artifacts_pb2_grpc

__all__ = ["LaunchError", "ServiceProcess", "start_store", "service_python"]


def service_python(service_dir: Path) -> str:
    """The interpreter to run a service folder with: its own environment when it declares one
    (service.toml), else this one (a bare folder, e.g. a test's)."""
    if not (service_dir / "service.toml").is_file():
        return sys.executable
    try:
        return Environments().python(load_manifest(service_dir))
    except (ServiceEnvironmentError, ValueError) as exc:
        raise LaunchError(str(exc)) from None


def start_store(root: str | Path, max_blob_bytes: int = 256 * 1024 * 1024) -> Server:
    """An artifact store served from this process on a free loopback port."""
    disk = DiskStore(root, max_blob_bytes=max_blob_bytes)
    return Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(disk), s)], ["Artifacts"])


class ServiceProcess:
    """`python SERVICE_DIR/approach.py --store ADDR` on a free port, until `stop()`.

    Use as a context manager; `address` is set once the service reports SERVING."""

    def __init__(self, service_dir: str | Path, store_address: str, workdir: str | Path,
                 python: str | None = None, threads: int = 1, start_timeout: float = 120.0):
        self.service_dir = Path(service_dir).resolve()
        self.script = self.service_dir / "approach.py"
        if not self.script.is_file():
            raise LaunchError(f"{self.service_dir} is not an approach service folder: it has no approach.py")
        self.store_address = store_address
        self.workdir = Path(workdir)
        self.python = python
        self.threads = threads
        self.start_timeout = start_timeout
        self.log_path = self.workdir / f"{self.service_dir.name}.log"
        self.address = ""
        self._popen: subprocess.Popen | None = None

    def start(self) -> str:
        self.workdir.mkdir(parents=True, exist_ok=True)
        port_file = self.workdir / f"{self.service_dir.name}.port"
        port_file.unlink(missing_ok=True)
        python = self.python or service_python(self.service_dir)
        # One thread each: the suite's numbers are about the contract, not speed.
        self._popen = spawn(python, [str(self.script), "--store", self.store_address, "--cache-dir",
                                     str(self.workdir / "cache")], 0, port_file, self.log_path, self.threads,
                            cwd=self.service_dir)
        try:
            self.address = wait_for_address(str(self.script), self._popen, port_file, self.log_path, self.start_timeout)
        except LaunchError:
            self.stop()
            raise
        return self.address

    def log_tail(self, lines: int = 20) -> str:
        return tail(self.log_path, lines)

    def stop(self) -> None:
        proc, self._popen = self._popen, None
        if proc is not None:
            stop_group(proc)

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
