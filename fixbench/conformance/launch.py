"""What the suite starts for itself when it is given a service folder instead of an address:
an in-process artifact store and the service as a local process pointed at that store.

The library may not import the orchestrator (design.md's dependency rules), so this is a
small launcher of its own rather than orchestrator.runtime_local; it stops exactly the
process it started, by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import fixbench
from fixbench.artifacts.disk import DiskStore
from fixbench.artifacts.server import ArtifactsServicer
from fixbench.grpcutil import Server, wait_healthy
from fixbench.v1 import artifacts_pb2_grpc

# The folder that holds the `fixbench` package: a service started from anywhere imports it.
LIBRARY_ROOT = Path(fixbench.__file__).resolve().parent.parent
_PR_SET_PDEATHSIG = 1


class LaunchError(RuntimeError):
    """A service folder that cannot be started; the message carries its last log lines."""


def start_store(root: str | Path, max_blob_bytes: int = 256 * 1024 * 1024) -> Server:
    """An artifact store served from this process on a free loopback port."""
    disk = DiskStore(root, max_blob_bytes=max_blob_bytes)
    return Server([lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(disk), s)], ["Artifacts"])


# Runs first in the child, then execs the service: the kernel kills the service when the
# suite dies (PR_SET_PDEATHSIG), so an interrupted run leaves no orphan. Done after exec rather
# than in a preexec_fn because forking a process with live gRPC threads and running Python
# before exec can abort the child.
_EXEC_WITH_PARENT = (
    "import ctypes, os, signal, sys\n"
    "try:\n"
    f"    ctypes.CDLL('libc.so.6', use_errno=True).prctl({_PR_SET_PDEATHSIG}, signal.SIGKILL)\n"
    "except OSError:\n"
    "    pass\n"
    "os.execv(sys.executable, [sys.executable] + sys.argv[1:])\n"
)


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class ServiceProcess:
    """`python SERVICE_DIR/approach.py --store ADDR` on a free port, until `stop()`.

    Use as a context manager; `address` is set once the service reports SERVING."""

    def __init__(self, service_dir: str | Path, store_address: str, workdir: str | Path,
                 python: str = sys.executable, threads: int = 1, start_timeout: float = 120.0):
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
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LIBRARY_ROOT), env.get("PYTHONPATH", "")]))
        # One thread each: the suite's numbers are about the contract, not speed, and the
        # machine is shared.
        env["FIXBENCH_THREADS"] = str(self.threads)
        env["OMP_NUM_THREADS"] = str(self.threads)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "ab") as log:
            self._popen = subprocess.Popen(
                [self.python, "-c", _EXEC_WITH_PARENT, str(self.script), "--store", self.store_address, "--port", "0",
                 "--port-file", str(port_file), "--cache-dir", str(self.workdir / "cache")],
                cwd=self.service_dir, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._popen.poll() is not None:
                code = self._popen.returncode
                self.stop()
                raise LaunchError(f"{self.script} exited with code {code} while starting:\n{_tail(self.log_path)}")
            if port_file.exists():
                address = f"127.0.0.1:{int(port_file.read_text())}"
                try:
                    wait_healthy(address, timeout=max(1.0, deadline - time.monotonic()))
                except TimeoutError as exc:
                    self.stop()
                    raise LaunchError(f"{exc}:\n{_tail(self.log_path)}") from exc
                self.address = address
                return address
            time.sleep(0.05)
        self.stop()
        raise LaunchError(f"{self.script} did not start within {self.start_timeout:.0f} s:\n{_tail(self.log_path)}")

    def log_tail(self, lines: int = 20) -> str:
        return _tail(self.log_path, lines)

    def stop(self) -> None:
        proc, self._popen = self._popen, None
        if proc is None:
            return
        if proc.poll() is None:
            # Its own session: the group holds only the service and anything it spawned.
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=5)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        proc.wait()

    def __enter__(self) -> ServiceProcess:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
