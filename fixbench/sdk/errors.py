"""Exceptions an approach may raise, and the mapping of every exception to a status."""

from __future__ import annotations

import traceback

from fixbench.v1 import repair_pb2

S = repair_pb2.RepairStatus


class Unadaptable(Exception):
    """Raise from repair() when the approach cannot apply; the message is the reason."""


class BudgetExceeded(Exception):
    """The wall-clock budget ran out (raised by RepairContext.check())."""


class Cancelled(Exception):
    """The caller cancelled the job (raised by RepairContext.check())."""


class InfraError(Exception):
    """Something outside the approach failed (e.g. the artifact store); retryable."""


_OOM_MARKERS = ("can't allocate memory", "out of memory", "DefaultCPUAllocator", "std::bad_alloc")


def status_for_exception(exc: BaseException) -> tuple[int, str]:
    """(RepairStatus, message) for an exception escaping repair()."""
    if isinstance(exc, Unadaptable):
        return S.REPAIR_STATUS_UNADAPTABLE, str(exc) or "the approach does not apply to this job"
    if isinstance(exc, BudgetExceeded):
        return S.REPAIR_STATUS_TIMEOUT, str(exc) or "the wall-clock budget ran out"
    if isinstance(exc, Cancelled):
        return S.REPAIR_STATUS_CANCELLED, str(exc) or "cancelled by the caller"
    if isinstance(exc, InfraError):
        return S.REPAIR_STATUS_INFRA_ERROR, str(exc)
    if isinstance(exc, MemoryError) or any(m in str(exc) for m in _OOM_MARKERS):
        return S.REPAIR_STATUS_OOM, f"out of memory: {exc}"
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    return S.REPAIR_STATUS_TOOL_ERROR, f"{type(exc).__name__}: {exc}\n{''.join(tb[-4:])}"
