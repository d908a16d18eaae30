"""The `local` runtime: the store, the evaluator and every approach service as local
processes on free loopback ports — the embedded default, no Docker needed. It stops exactly
the processes it started (by pid).

Each approach runs in an environment of its own, built once from its folder's requirements
(fixbench.catalog.environments), so conflicting stacks stay apart as in their images; the
store and the evaluator run on the project's interpreter. An approach whose environment
cannot be built is left out with the reason (`unavailable`), and the study goes on with the
others. FIXBENCH_ISOLATED_ENVS=0 runs every approach on the project's interpreter instead."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fixbench.artifacts.client import STORE_DIR_ENV
from fixbench.catalog import ManifestError, load_manifest
from fixbench.catalog.environments import Environments, ServiceEnvironmentError
from fixbench.launcher import LaunchError, spawn, stop_group, tail, wait_for_address
from fixbench.security.limits import ResourceLimits, describe_exit
from fixbench.security.scope import KEY_ENV, KEY_FILE_ENV
from orchestrator.runtime_api import Addresses
from orchestrator.spec import REPO_ROOT, SERVICES_DIR

log = logging.getLogger("fixbench.runtime")
__all__ = ["Addresses", "LaunchError", "LocalRuntime", "tail"]


@dataclass
class _Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path
    port_file: Path
    python: str
    args: list[str] = field(default_factory=list)
    port: int = 0
    restarts: int = 0
    limits: ResourceLimits | None = None
    # (pid, return code, log tail, monotonic time it was noticed) of the last death, for exit_cause()
    last_exit: tuple[int, int, str, float] | None = None

    def record_exit(self) -> bool:
        """Notes the current process's death once; True when it is dead."""
        code = self.popen.poll()
        if code is None:
            return False
        if self.last_exit is None or self.last_exit[0] != self.popen.pid:
            self.last_exit = (self.popen.pid, code, tail(self.log_path, 40), time.monotonic())
        return True


class LocalRuntime:
    def __init__(self, workdir: str | Path, threads_per_service: int = 1, python: str = sys.executable,
                 start_timeout: float = 120.0, limits: dict[str, ResourceLimits] | None = None,
                 environments: Environments | None = None, isolated: bool | None = None):
        """`limits` maps an approach name to the resource limits of each of its processes;
        `isolated` (default: FIXBENCH_ISOLATED_ENVS, on) runs each approach in its own
        environment from `environments`."""
        self.workdir = Path(workdir).resolve()
        self.store_root = self.workdir / "store"
        self.limits = dict(limits or {})
        self.python = python
        self.isolated = os.environ.get("FIXBENCH_ISOLATED_ENVS", "1") != "0" if isolated is None else isolated
        self.environments = environments or Environments()
        # approach name -> why it could not be started (its environment failed to build)
        self.unavailable: dict[str, str] = {}
        self.threads = threads_per_service
        self.start_timeout = start_timeout
        self._procs: list[_Proc] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None

    def _popen(self, proc_python: str, args: list[str], port: int, port_file: Path, log_path: Path,
               limits: ResourceLimits | None = None) -> subprocess.Popen:
        # Approach services never get the store's signing key: they hold only the scoped
        # credential of each job (the store and the evaluator are started with it). Nor the
        # store's directory (FIXBENCH_STORE_DIR): reading its files goes around every scope
        # check. The evaluator, which holds the key and may read every blob anyway, gets the
        # directory and fetches without a stream (verified; the orchestrator's clients get it
        # through Addresses.store_dir). All run as one user here, so this keeps honest code
        # honest; a hostile approach is kept from the store's files by containers (its own
        # filesystem, no store volume), not by the local runtime (deploy/security.md).
        approach = args[:1] and args[0].endswith("approach.py")
        evaluator = args[:2] == ["-m", "evaluator"]
        return spawn(proc_python, args, port, port_file, log_path, self.threads, limits, cwd=REPO_ROOT,
                     withhold=(KEY_FILE_ENV, KEY_ENV, STORE_DIR_ENV) if approach else (STORE_DIR_ENV,),
                     extra_env={STORE_DIR_ENV: str(self.store_root)} if evaluator else None)

    def _spawn(self, name: str, args: list[str], limits: ResourceLimits | None = None,
               python: str | None = None) -> _Proc:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        run = self.workdir / "run"
        run.mkdir(parents=True, exist_ok=True)
        port_file = run / f"{name}.port"
        port_file.unlink(missing_ok=True)
        log_path = logs / f"{name}.log"
        python = python or self.python
        proc = _Proc(name, self._popen(python, args, 0, port_file, log_path, limits), log_path, port_file, python, args,
                     limits=limits)
        self._procs.append(proc)
        self._write_pid(proc)
        return proc

    def _write_pid(self, proc: _Proc) -> None:
        """run/<name>.pid names the live process, for `kill` in fault-injection tests."""
        (self.workdir / "run" / f"{proc.name}.pid").write_text(str(proc.popen.pid))

    def _supervise(self) -> None:
        """Restarts a service that died, on the same port (like a container restart policy),
        so in-flight jobs fail as infrastructure errors and their retries find it again."""
        while not self._stopping.wait(0.5):
            with self._lock:
                for proc in self._procs:
                    if proc.popen.poll() is None or not proc.port or self._stopping.is_set():
                        continue
                    proc.restarts += 1
                    proc.record_exit()
                    stop_group(proc.popen, grace=0)  # what the dead one left running in its session
                    log.warning("%s exited with code %s; restarting it on port %d (restart %d)",
                                proc.name, proc.popen.returncode, proc.port, proc.restarts)
                    with open(proc.log_path, "ab") as fh:
                        fh.write(f"\n--- fixbench: restarting {proc.name} (exit code {proc.popen.returncode}) ---\n".encode())
                    proc.popen = self._popen(proc.python, proc.args, proc.port, proc.port_file, proc.log_path, proc.limits)
                    self._write_pid(proc)

    def _address(self, proc: _Proc) -> str:
        address = wait_for_address(proc.name, proc.popen, proc.port_file, proc.log_path, self.start_timeout)
        proc.port = int(address.rsplit(":", 1)[1])
        return address

    def _approach_python(self, name: str) -> str:
        """The interpreter of the approach's own environment (built on first use)."""
        if not self.isolated:
            return self.python
        try:
            manifest = load_manifest(SERVICES_DIR / name)
        except ManifestError as exc:
            raise ServiceEnvironmentError(str(exc)) from None
        started = time.monotonic()
        python = self.environments.python(manifest)
        log.info("%s runs in %s (ready in %.1f s)", name, Path(python).parent.parent, time.monotonic() - started)
        return python

    def start(self, approaches: dict[str, int]) -> Addresses:
        """Starts the store, the evaluator and `replicas` processes of each approach."""
        try:
            store = self._address(self._spawn("store", ["-m", "fixbench.artifacts", "--root", str(self.store_root)]))
            cache = self.workdir / "cache"
            pending = [(self._spawn("evaluator", ["-m", "evaluator", "--store", store, "--cache-dir", str(cache / "evaluator")]), None)]
            for name, replicas in approaches.items():
                script = SERVICES_DIR / name / "approach.py"
                try:
                    python = self._approach_python(name)
                except ServiceEnvironmentError as exc:
                    self.unavailable[name] = str(exc)
                    log.error("%s", exc)
                    continue
                for r in range(replicas):
                    proc = self._spawn(f"{name}-{r}", [str(script), "--store", store, "--cache-dir", str(cache / f"{name}-{r}")],
                                       self.limits.get(name), python)
                    pending.append((proc, name))
            addresses = Addresses(store=store, evaluator="", store_dir=str(self.store_root))
            for proc, name in pending:  # started in parallel above; wait for each in turn
                addr = self._address(proc)
                if name is None:
                    addresses.evaluator = addr
                else:
                    addresses.approaches.setdefault(name, []).append(addr)
            self._watchdog = threading.Thread(target=self._supervise, name="supervisor", daemon=True)
            self._watchdog.start()
            return addresses
        except BaseException:
            self.stop()
            raise

    def log_tail(self, address: str, lines: int = 15) -> str:
        for proc in self._procs:
            if proc.port_file.exists() and proc.port_file.read_text().strip() == address.rsplit(":", 1)[-1]:
                return tail(proc.log_path, lines)
        return ""

    def exit_cause(self, address: str, since: float) -> tuple[str, str] | None:
        """(status, message) when the service at `address` died, after monotonic time `since`
        (when the failed call started), in a way its resource limits explain (OOM, CPU time);
        else None. The scheduler asks after a failed call, so such a death is recorded as the
        approach's outcome and not retried. With several jobs in flight on one process, each
        of them is blamed: the runtime cannot tell which one took the memory."""
        port = address.rsplit(":", 1)[-1]
        with self._lock:
            proc = next((p for p in self._procs if str(p.port) == port), None)
        if proc is None or proc.limits is None or not proc.limits.any:
            return None
        deadline = time.monotonic() + 0.5
        while not proc.record_exit() and time.monotonic() < deadline:
            time.sleep(0.05)  # the connection can drop a moment before the process is reaped
        if proc.last_exit is None or proc.last_exit[3] < since:
            return None  # alive, or a death noticed before this call began (it met a restarting service)
        return describe_exit(proc.last_exit[1], proc.limits, proc.last_exit[2])

    def pid(self, name: str) -> int | None:
        """Current pid of a started service (for fault-injection tests)."""
        return next((p.popen.pid for p in self._procs if p.name == name), None)

    def stop(self) -> None:
        self._stopping.set()
        if self._watchdog is not None:
            self._watchdog.join()
        for proc in self._procs:  # every one asked first, then each waited for
            if proc.popen.poll() is None:
                stop_group(proc.popen, grace=0)
        deadline = time.monotonic() + 5
        for proc in self._procs:
            stop_group(proc.popen, grace=deadline - time.monotonic())
        self._procs.clear()

    def __enter__(self) -> LocalRuntime:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
