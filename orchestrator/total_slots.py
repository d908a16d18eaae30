"""The study's total concurrency slots (`concurrency.total`), handed out by work left.

A freed slot goes to the waiting job whose approach has the most work left: its jobs not yet
started times the mean length of its jobs so far. A FIFO queue (asyncio.Semaphore) serves
the approaches in turn instead, so an approach with long jobs on one replica, whose jobs can
only run one after the other, got its next turn only after every other approach had had
one, and finished alone at the end with the other cores idle (issue 23: APRICOT's chain ran
for 300 s after the 25 other approaches were done, at 2 concurrent jobs). Longest work first
starts such a chain early and keeps it running while the other approaches share the other
slots; an approach still never takes more slots than its replicas offer, since a job waits
for its approach's slot before it asks for one of these.

Until an approach has finished a job its mean is the mean over every approach's finished
jobs (1 s before any has), so the first jobs go in the order the jobs were listed. The
order of starts changes only when results arrive, never what a job computes: every job's
result depends on its own seed alone."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

# The assumed length of a job before any job has finished: only the ratio between
# approaches matters, so any positive constant ranks them by their number of jobs.
UNKNOWN_JOB_SECONDS = 1.0


@dataclass(order=True)
class _Waiter:
    order: int
    approach: str = field(compare=False)
    granted: asyncio.Future = field(compare=False)


class TotalSlots:
    def __init__(self, total: int, approaches_of_jobs: Iterable[str]):
        if total < 1:
            raise ValueError(f"total concurrency must be at least 1, not {total}")
        self._free = total
        self._left: Counter[str] = Counter(approaches_of_jobs)  # jobs not yet started
        self._seconds: dict[str, list[float]] = {}  # approach -> [sum, count] of finished jobs
        self._waiting: list[_Waiter] = []
        self._order = itertools.count()

    # ---- what ranks the approaches ----------------------------------------------------------
    def record(self, approach: str, seconds: float) -> None:
        """A finished job of `approach` took `seconds` (also a finished job of an earlier run
        of the study, so that a resumed study ranks by what it measured before)."""
        total = self._seconds.setdefault(approach, [0.0, 0])
        total[0] += max(0.0, seconds)
        total[1] += 1

    def mean_seconds(self, approach: str) -> float:
        own = self._seconds.get(approach)
        if own and own[1]:
            return own[0] / own[1]
        count = sum(n for _, n in self._seconds.values())
        return sum(s for s, _ in self._seconds.values()) / count if count else UNKNOWN_JOB_SECONDS

    def work_left(self, approach: str) -> float:
        """Seconds of work `approach` has left to start, as far as its jobs so far tell."""
        return self._left[approach] * self.mean_seconds(approach)

    def requeue(self, approach: str) -> None:
        """A started job of `approach` will run again (an infrastructure retry)."""
        self._left[approach] += 1

    # ---- the slots --------------------------------------------------------------------------
    async def acquire(self, approach: str) -> None:
        """Waits for a slot for a job of `approach`; the job counts as started once granted."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            self._left[approach] -= 1
            return
        waiter = _Waiter(next(self._order), approach, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.granted.done() and not waiter.granted.cancelled():
                self._left[approach] += 1  # granted as it was cancelled: hand the slot on
                self.release()
            raise

    def release(self) -> None:
        """Frees a slot: to the waiting job with the most work left (the earliest on a tie)."""
        while self._waiting:
            best = max(self._waiting, key=lambda w: (self.work_left(w.approach), -w.order))
            self._waiting.remove(best)
            if best.granted.done():  # cancelled while it waited: its task is on its way out
                continue
            self._left[best.approach] -= 1
            best.granted.set_result(None)
            return
        self._free += 1
