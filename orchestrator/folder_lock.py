"""One orchestrator per results folder: an exclusive lock (flock) on `<out>/.orchestrator.lock`
held for the whole study. A second orchestrator on the same folder would run every job again
and share the first one's port files (and so its services); it is refused at once, with the
holder's pid in the message. The lock goes with the process, so a killed orchestrator never
leaves a stale one."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

LOCK_NAME = ".orchestrator.lock"


class FolderBusy(RuntimeError):
    """Another orchestrator holds the results folder; the message names its pid."""


@contextlib.contextmanager
def results_folder_lock(out: str | Path) -> Iterator[Path]:
    """Holds the exclusive lock on results folder `out` (created if needed) while the block runs."""
    path = Path(out) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            raise FolderBusy(f"results folder {Path(out)} is in use by orchestrator {holder}; wait for it to "
                             "finish (or stop it) before running a study into this folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the lock
