"""Per-process resource limits for locally started services, and how to read a death under
them.

Memory is limited with RLIMIT_DATA rather than RLIMIT_AS: since Linux 4.7 RLIMIT_DATA counts
every private writable mapping (heap, anonymous mmap: numpy, torch, onnxruntime buffers),
while RLIMIT_AS also counts shared-library code and address space that threads reserve but
never touch — importing torch alone needs about 2 GiB of address space and 0.5 GiB of data
here, so an RLIMIT_AS budget would mostly measure the imports. Over the limit, allocations
fail: Python raises MemoryError and torch "DefaultCPUAllocator: can't allocate memory"
(both reported as OOM by the SDK); native code that cannot cope aborts the process, which
`describe_exit` recognises.

CPU time is limited with RLIMIT_CPU per process (not per job): the kernel sends SIGXCPU at
the soft limit and SIGKILL a few seconds later. It reclaims CPU from runaway native threads
that ignore their budget (the SDK abandons such a thread but cannot stop it); the runtime
restarts the process with a fresh allowance.
"""

from __future__ import annotations

import resource
import signal
from dataclasses import dataclass

# Seconds between SIGXCPU (catchable) and the kernel's SIGKILL.
CPU_HARD_MARGIN_SECONDS = 5
# Log lines that show a process ran out of memory before it died.
_OOM_LOG_MARKERS = ("MemoryError", "bad_alloc", "can't allocate memory", "Cannot allocate memory",
                    "out of memory", "Memory allocation", "Failed to allocate memory")


@dataclass(frozen=True)
class ResourceLimits:
    """Limits of one service process; None means unlimited."""

    memory_mb: int | None = None
    cpu_seconds: int | None = None

    def __post_init__(self) -> None:
        if self.memory_mb is not None and self.memory_mb < 64:
            raise ValueError(f"memory_mb={self.memory_mb}: below 64 MB no Python service can start")
        if self.cpu_seconds is not None and self.cpu_seconds < 1:
            raise ValueError(f"cpu_seconds={self.cpu_seconds}: must be at least 1")

    @property
    def any(self) -> bool:
        return self.memory_mb is not None or self.cpu_seconds is not None

    def apply(self) -> None:
        """Sets the limits on the calling process (run in the child before exec)."""
        if self.memory_mb is not None:
            limit = self.memory_mb * 1024 * 1024
            resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
        if self.cpu_seconds is not None:
            resource.setrlimit(resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + CPU_HARD_MARGIN_SECONDS))

    def apply_to(self, pid: int) -> None:
        """Sets the limits on another process (Linux prlimit), right after it was started."""
        if self.memory_mb is not None:
            limit = self.memory_mb * 1024 * 1024
            resource.prlimit(pid, resource.RLIMIT_DATA, (limit, limit))
        if self.cpu_seconds is not None:
            resource.prlimit(pid, resource.RLIMIT_CPU, (self.cpu_seconds, self.cpu_seconds + CPU_HARD_MARGIN_SECONDS))

    def describe(self) -> str:
        parts = []
        if self.memory_mb is not None:
            parts.append(f"memory {self.memory_mb} MB")
        if self.cpu_seconds is not None:
            parts.append(f"CPU {self.cpu_seconds} s")
        return ", ".join(parts) or "no limits"


def _signal_name(returncode: int) -> str:
    try:
        return signal.Signals(-returncode).name
    except ValueError:
        return f"signal {-returncode}"


def describe_exit(returncode: int, limits: ResourceLimits, log_tail: str = "") -> tuple[str, str] | None:
    """(status, message) when a service's death is explained by its limits — "OOM" or
    "TIMEOUT" — else None (a crash or a kill from outside: an infrastructure error).

    SIGKILL is never blamed on a limit: rlimits do not send it before SIGXCPU, so it comes
    from outside (an operator, a fault-injection test) and the job deserves a retry.
    """
    if limits.cpu_seconds is not None and returncode == -signal.SIGXCPU:
        return "TIMEOUT", (f"the service used up its CPU-time limit of {limits.cpu_seconds} s "
                           f"(killed by SIGXCPU) while running this job")
    if limits.memory_mb is None or returncode == 0 or returncode == -signal.SIGKILL:
        return None
    how = f"killed by {_signal_name(returncode)}" if returncode < 0 else f"exited with code {returncode}"
    oom_logged = any(marker in log_tail for marker in _OOM_LOG_MARKERS)
    if returncode in (-signal.SIGABRT, -signal.SIGSEGV, -signal.SIGBUS) or oom_logged:
        return "OOM", (f"the service died ({how}) under its memory limit of {limits.memory_mb} MB"
                       + (": its log shows a failed allocation" if oom_logged else ": most likely out of memory"))
    return None
