"""glibc heap settings for a process that streams blobs (the store).

Every Upload message is deserialized into fresh ~1 MiB buffers. By default glibc serves an
allocation that large with a fresh mmap and unmaps it on free, so every chunk page-faults
its memory in anew (costly on VMs whose guest pages are backed on first touch), and a heap
that shrank is grown and faulted in again. Measured on the store: about a third of its CPU
per uploaded byte. Serving allocations under 4 MiB from the heap, and keeping up to 32 MiB
of freed heap instead of returning it at once, reuses the same pages chunk after chunk; the
cost is at most that much memory held per malloc arena.
"""

from __future__ import annotations

import ctypes
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 4 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 32 * 1024 * 1024


def keep_chunk_buffers() -> bool:
    """Applies the settings above where the C library is glibc; returns whether it did."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
