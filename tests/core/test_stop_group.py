"""Stopping a launched service stops what it spawned too, also the processes that moved to a
process group of their own (Ray's workers do), and nothing outside its session."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from fixbench.launcher import session_members, stop_group

# A "service" that starts a grandchild in a process group of its own (as a Ray worker is) and
# one in its own group, writes their pids, and sleeps. With TERM_IGNORED the grandchildren
# ignore SIGTERM, so only the SIGKILL that follows can end them.
SERVICE = r"""
import os, subprocess, sys, time
ignore = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " if os.environ.get("TERM_IGNORED") else ""
code = ignore + "import time; time.sleep(120)"
moved = subprocess.Popen([sys.executable, "-c", code], process_group=0)
stayed = subprocess.Popen([sys.executable, "-c", code])
open(sys.argv[1], "w").write(f"{moved.pid} {stayed.pid}")
time.sleep(120)
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purposes
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def start(tmp_path: Path, **env: str) -> tuple[subprocess.Popen, list[int]]:
    pids_file = tmp_path / "pids"
    popen = subprocess.Popen([sys.executable, "-c", SERVICE, str(pids_file)], start_new_session=True,
                             env={**os.environ, **env})
    deadline = time.monotonic() + 30
    while not (pids_file.exists() and pids_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return popen, [int(p) for p in pids_file.read_text().split()]


def test_a_grandchild_in_a_group_of_its_own_is_stopped_with_the_service(tmp_path):
    popen, (moved, stayed) = start(tmp_path)
    assert os.getpgid(moved) != popen.pid and os.getsid(moved) == popen.pid
    assert {popen.pid, moved, stayed} <= set(session_members(popen.pid))
    stop_group(popen, grace=5)
    assert popen.returncode is not None
    assert not alive(moved) and not alive(stayed)


def test_grandchildren_that_ignore_sigterm_are_killed_after_the_grace(tmp_path):
    popen, (moved, stayed) = start(tmp_path, TERM_IGNORED="1")
    started = time.monotonic()
    stop_group(popen, grace=0.5)
    assert not alive(moved) and not alive(stayed)
    assert time.monotonic() - started < 10


def test_what_a_dead_service_left_behind_is_stopped_and_no_other_session_is_touched(tmp_path):
    popen, (moved, stayed) = start(tmp_path)
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        os.kill(popen.pid, 9)
        popen.wait()  # reaped: only its session's orphans are left, reparented
        assert alive(moved) and alive(stayed)
        stop_group(popen, grace=5)
        assert not alive(moved) and not alive(stayed)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
