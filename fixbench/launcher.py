"""Starting a fixbench server as a local process: the one launcher behind the local runtime
(orchestrator.runtime_local) and the conformance suite (fixbench.conformance).

A child is started in its own session on a port of its choosing (it writes the port to a file
once serving), with the source tree on PYTHONPATH. It dies with its parent: the launcher sets
FIXBENCH_PARENT_PID and the server asks the kernel for SIGKILL on the parent's death itself
(fixbench.grpcutil.die_with_parent) — Python code between fork and exec (a preexec_fn) is
unsafe in a threaded parent. Only the processes started here are ever signalled, by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import fixbench
from fixbench.grpcutil import wait_healthy
from fixbench.security.limits import ResourceLimits

# The folder that holds the `fixbench` package: a service started from anywhere imports it.
LIBRARY_ROOT = Path(fixbench.__file__).resolve().parent.parent


class LaunchError(RuntimeError):
    """A server that would not start; the message carries its last log lines."""


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def child_env(threads: int, withhold: tuple[str, ...] = (), extra: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: ours, less the variables in `withhold` (secrets it must not
    see, e.g. the store's signing key for an approach service), plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in withhold}
    env.update(extra or {})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(LIBRARY_ROOT), env.get("PYTHONPATH", "")]))
    env["FIXBENCH_THREADS"] = str(threads)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env["PYTHONUNBUFFERED"] = "1"
    env["FIXBENCH_PARENT_PID"] = str(os.getpid())
    # a service environment is a venv of its own: never the caller's
    env.pop("VIRTUAL_ENV", None)
    return env


def spawn(python: str, args: list[str], port: int, port_file: Path, log_path: Path, threads: int = 1,
          limits: ResourceLimits | None = None, cwd: Path | None = None,
          withhold: tuple[str, ...] = (), extra_env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python ARGS --port PORT --port-file PORT_FILE`, output appended to `log_path`;
    `withhold` and `extra_env` as in child_env."""
    with open(log_path, "ab") as log_fh:
        popen = subprocess.Popen(
            [python, *args, "--port", str(port), "--port-file", str(port_file)],
            cwd=cwd or LIBRARY_ROOT, env=child_env(threads, withhold, extra_env), stdout=log_fh, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
    if limits is not None:
        try:
            limits.apply_to(popen.pid)
        except ProcessLookupError:
            pass  # already gone: the caller sees it exit
    return popen


def wait_for_address(name: str, popen: subprocess.Popen, port_file: Path, log_path: Path, timeout: float) -> str:
    """The server's `127.0.0.1:port` once it wrote its port and answers health SERVING."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if popen.poll() is not None:
            raise LaunchError(f"{name} exited with code {popen.returncode} while starting:\n{tail(log_path)}")
        if port_file.exists() and port_file.read_text().strip():
            address = f"127.0.0.1:{int(port_file.read_text())}"
            try:
                wait_healthy(address, timeout=max(1.0, deadline - time.monotonic()))
            except TimeoutError as exc:
                raise LaunchError(f"{exc}:\n{tail(log_path)}") from exc
            return address
        time.sleep(0.05)
    raise LaunchError(f"{name} did not start within {timeout:.0f} s:\n{tail(log_path)}")


def session_members(sid: int) -> list[int]:
    """Pids of the live processes in session `sid` (Linux /proc; empty elsewhere). A child
    started here leads a session of its own, and its descendants stay in it even when they
    leave its process group: Ray's workers each take a group of their own, so a signal to the
    service's group missed them and they trained on for up to 20 s after a Ctrl-C."""
    members = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue  # exited meanwhile
        # pid (comm) state ppid pgrp session ...; comm may hold spaces and parentheses
        fields = stat[stat.rindex(b")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] != b"Z":
            members.append(int(entry))
    return members


def _signal_session(popen: subprocess.Popen, signum: int) -> None:
    """`signum` to every process of the child's session. While the child is not reaped its pid
    (the session id) is held; once it is, the kernel still holds the id for as long as one
    member of the session lives, so a process that has the id as its own pid is a new one,
    and then the session is someone else's and nothing is signalled."""
    sid = popen.pid
    members = session_members(sid)
    if popen.returncode is not None and sid in members:
        return
    if popen.returncode is None:
        try:
            os.killpg(sid, signum)
        except ProcessLookupError:
            pass
    for pid in members:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def stop_group(popen: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM to the child's session (the service and anything it spawned, whatever process
    group they moved to), SIGKILL after `grace` seconds; waits for the child, and as long
    again for the rest of its session."""
    popen.poll()
    _signal_session(popen, signal.SIGTERM)
    try:
        popen.wait(timeout=max(0.1, grace))
    except subprocess.TimeoutExpired:
        _signal_session(popen, signal.SIGKILL)
        popen.wait()
    deadline = time.monotonic() + max(0.1, grace)
    while _orphans(popen) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _orphans(popen):
        _signal_session(popen, signal.SIGKILL)


def _orphans(popen: subprocess.Popen) -> list[int]:
    members = session_members(popen.pid)
    return [] if popen.pid in members else members  # the child is reaped here; see _signal_session
