"""The `local` runtime: the store, the evaluator and every approach service as local
processes on free loopback ports — the embedded default, no Docker needed. It stops exactly
the processes it started (by pid)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from fixbench.grpcutil import wait_healthy
from orchestrator.spec import REPO_ROOT, SERVICES_DIR


class RuntimeError_(RuntimeError):
    """A service that would not start; the message carries its last log lines."""


@dataclass
class Addresses:
    store: str
    evaluator: str
    approaches: dict[str, list[str]] = field(default_factory=dict)


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    port_file: Path


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


class LocalRuntime:
    def __init__(self, workdir: str | Path, threads_per_service: int = 1, python: str = sys.executable,
                 start_timeout: float = 120.0):
        self.workdir = Path(workdir).resolve()
        self.python = python
        self.threads = threads_per_service
        self.start_timeout = start_timeout
        self._procs: list[_Proc] = []

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH", "")]))
        env["FIXBENCH_THREADS"] = str(self.threads)
        env.setdefault("OMP_NUM_THREADS", str(self.threads))
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _spawn(self, name: str, args: list[str]) -> _Proc:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        run = self.workdir / "run"
        run.mkdir(parents=True, exist_ok=True)
        port_file = run / f"{name}.port"
        port_file.unlink(missing_ok=True)
        log_path = logs / f"{name}.log"
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                [self.python, *args, "--port", "0", "--port-file", str(port_file)],
                cwd=REPO_ROOT, env=self._env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        proc = _Proc(name, popen, log_path, port_file)
        self._procs.append(proc)
        return proc

    def _address(self, proc: _Proc) -> str:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError_(f"{proc.name} exited with code {proc.popen.returncode} while starting:\n{tail(proc.log_path)}")
            if proc.port_file.exists():
                address = f"127.0.0.1:{int(proc.port_file.read_text())}"
                wait_healthy(address, timeout=max(1.0, deadline - time.monotonic()))
                return address
            time.sleep(0.05)
        raise RuntimeError_(f"{proc.name} did not start within {self.start_timeout:.0f} s:\n{tail(proc.log_path)}")

    def start(self, approaches: dict[str, int]) -> Addresses:
        """Starts the store, the evaluator and `replicas` processes of each approach."""
        try:
            store = self._address(self._spawn("store", ["-m", "fixbench.artifacts", "--root", str(self.workdir / "store")]))
            cache = self.workdir / "cache"
            pending = [(self._spawn("evaluator", ["-m", "evaluator", "--store", store, "--cache-dir", str(cache / "evaluator")]), None)]
            for name, replicas in approaches.items():
                script = SERVICES_DIR / name / "approach.py"
                for r in range(replicas):
                    proc = self._spawn(f"{name}-{r}", [str(script), "--store", store, "--cache-dir", str(cache / f"{name}-{r}")])
                    pending.append((proc, name))
            addresses = Addresses(store=store, evaluator="")
            for proc, name in pending:  # started in parallel above; wait for each in turn
                addr = self._address(proc)
                if name is None:
                    addresses.evaluator = addr
                else:
                    addresses.approaches.setdefault(name, []).append(addr)
            return addresses
        except BaseException:
            self.stop()
            raise

    def log_tail(self, address: str, lines: int = 15) -> str:
        for proc in self._procs:
            if proc.port_file.exists() and proc.port_file.read_text().strip() == address.rsplit(":", 1)[-1]:
                return tail(proc.log_path, lines)
        return ""

    def stop(self) -> None:
        for proc in self._procs:
            if proc.popen.poll() is None:
                try:
                    os.killpg(proc.popen.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for proc in self._procs:
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.popen.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.popen.wait()
        self._procs.clear()

    def __enter__(self) -> "LocalRuntime":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
