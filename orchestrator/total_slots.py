"""The study's total concurrency slots (`concurrency.total`), handed out by work left.

A freed slot goes to the waiting job whose approach has the most work left: the estimated
lengths of its jobs not yet started. A FIFO queue (asyncio.Semaphore) serves the approaches
in turn instead, so an approach with long jobs on one replica, whose jobs can only run one
after the other, got its next turn only after every other approach had had one, and finished
alone at the end with the other cores idle (issue 23: APRICOT's chain ran for 300 s after the
25 other approaches were done, at 2 concurrent jobs). Longest work first starts such a chain
early and keeps it running while the other approaches share the other slots; an approach
still never takes more slots than its replicas offer, since a job waits for its approach's
slot before it asks for one of these.

Estimates. A job's length is modelled as its approach's speed times its subject's size,
log t = a[approach] + s[subject], fitted to the finished jobs (alternating means in log
space). An approach's mean alone misjudged its chain: every approach starts on the suite's
first subject (MNIST / LeNet-5, the smallest), so an approach whose first job was quick
ranked low until its DenseNet job revealed otherwise, and then finished alone. The subject
terms, learned from whichever approaches got there first, scale its remaining jobs up as
soon as its first one is done. A job that ended in Check (UNADAPTABLE) is not learnt from.

Probing. An approach with no finished job that ran its repair (nor one running) goes
before the others: its first job is cheap to learn from and, until it is done, its chain
could be the longest of all. Among those, and on ties, jobs go in the order they asked.

The order of starts changes only when results arrive, never what a job computes: every
job's result depends on its own seed alone."""

from __future__ import annotations

import asyncio
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

# Jobs that end in Check (UNADAPTABLE in milliseconds) would weigh in the log fit as far
# shorter than anything that runs; below this every job counts as this long.
FLOOR_SECONDS = 0.5
# Statuses of a job that ended before its repair ran: dtr-anp answers UNADAPTABLE at once
# on every model without BatchNorm, which made it look like the quickest approach until its
# three BatchNorm CNNs ran last, alone (280 s after the rest, at 2 concurrent jobs).
ENDED_IN_CHECK = frozenset({"UNADAPTABLE"})
# Rounds of the alternating fit: each round halves the error of the previous one or better
# on these small, nearly complete tables; the fit runs once per freed slot, on a few hundred
# finished jobs at most.
FIT_ROUNDS = 8


@dataclass
class _Waiter:
    approach: str
    subject: str
    granted: asyncio.Future


class JobLengths:
    """log(seconds) = speed[approach] + size[subject], fitted to the finished jobs."""

    def __init__(self):
        self._logs: dict[tuple[str, str], list[float]] = {}
        self._approaches: set[str] = set()
        self._fit: tuple[dict[str, float], dict[str, float]] | None = None

    def record(self, approach: str, subject: str, seconds: float) -> None:
        self._logs.setdefault((approach, subject), []).append(math.log(max(FLOOR_SECONDS, seconds)))
        self._approaches.add(approach)
        self._fit = None

    def known(self, approach: str) -> bool:
        return approach in self._approaches

    def _fitted(self) -> tuple[dict[str, float], dict[str, float]]:
        if self._fit is None:
            points = [(a, s, v) for (a, s), values in self._logs.items() for v in values]
            speed = _means((a, v) for a, _, v in points)
            size: dict[str, float] = {}
            for _ in range(FIT_ROUNDS):
                size = _means((s, v - speed[a]) for a, s, v in points)
                # Only differences are identified: an unseen subject counts as the average seen one.
                centre = sum(size.values()) / len(size) if size else 0.0
                size = {s: v - centre for s, v in size.items()}
                speed = _means((a, v - size[s]) for a, s, v in points)
            self._fit = (speed, size)
        return self._fit

    def estimate(self, approach: str, subject: str) -> float:
        """Seconds a job of `approach` on `subject` is expected to take: an approach with no
        finished job counts as the average approach; before any job, every job is 1 s."""
        speed, size = self._fitted()
        if not speed:
            return 1.0
        a = speed.get(approach, sum(speed.values()) / len(speed))
        return math.exp(a + size.get(subject, 0.0))


def _means(pairs: Iterable[tuple[str, float]]) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for key, value in pairs:
        total = sums.setdefault(key, [0.0, 0])
        total[0] += value
        total[1] += 1
    return {key: s / n for key, (s, n) in sums.items()}


class WorkLeft:
    """The ranking alone, without the waiting (the scheduler's TotalSlots uses it; so does
    benchmarks/replay_slots.py, which replays a finished study's job lengths through it).
    `jobs`: (approach, subject) of every job the study will run; a subject is whatever sizes
    a job beyond its approach (the scheduler passes the fault id)."""

    def __init__(self, jobs: Iterable[tuple[str, str]]):
        self._left: Counter[tuple[str, str]] = Counter(jobs)  # jobs not yet started
        self._running: Counter[str] = Counter()
        self.lengths = JobLengths()

    def record(self, approach: str, subject: str, seconds: float, status: str) -> None:
        """A finished job of `approach` on `subject` took `seconds` and ended in `status`
        (also a finished job of an earlier run of the study, so that a resumed study ranks
        by what it measured). A job that ended in Check says nothing of the approach's speed:
        it is not learnt from, and an approach with only such jobs is still probed."""
        if status not in ENDED_IN_CHECK:
            self.lengths.record(approach, subject, seconds)

    def work_left(self, approach: str) -> float:
        """Seconds of work `approach` has left to start, as far as the finished jobs tell."""
        return sum(n * self.lengths.estimate(a, s) for (a, s), n in self._left.items() if a == approach and n > 0)

    def started(self, approach: str, subject: str) -> None:
        self._left[(approach, subject)] -= 1
        self._running[approach] += 1

    def stopped(self, approach: str) -> None:
        """A started job of `approach` holds no slot any more (finished, failed, cancelled)."""
        self._running[approach] = max(0, self._running[approach] - 1)

    def requeue(self, approach: str, subject: str) -> None:
        """A started job of `approach` will run again (an infrastructure retry, a cancelled grant)."""
        self._left[(approach, subject)] += 1

    def pick(self, waiting: list[tuple[str, str]]) -> int:
        """Index of the waiting (approach, subject) to start: an approach not yet probed (no
        job finished nor running) first, then the most work left; the earliest on a tie."""
        work = {a: self.work_left(a) for a, _ in waiting}

        def rank(i: int) -> tuple:
            approach = waiting[i][0]
            probing = not self._running[approach] and not self.lengths.known(approach)
            return (probing, work[approach], -i)

        return max(range(len(waiting)), key=rank)


class TotalSlots:
    """`total` slots for the jobs (approach, subject) in `jobs`, handed out by WorkLeft."""

    def __init__(self, total: int, jobs: Iterable[tuple[str, str]]):
        if total < 1:
            raise ValueError(f"total concurrency must be at least 1, not {total}")
        self._free = total
        self.ranking = WorkLeft(jobs)
        self._waiting: list[_Waiter] = []

    def record(self, approach: str, subject: str, seconds: float, status: str) -> None:
        self.ranking.record(approach, subject, seconds, status)

    def work_left(self, approach: str) -> float:
        return self.ranking.work_left(approach)

    def requeue(self, approach: str, subject: str) -> None:
        self.ranking.requeue(approach, subject)

    async def acquire(self, approach: str, subject: str) -> None:
        """Waits for a slot for a job of `approach` on `subject`; the job counts as started
        once granted, until `release`."""
        if self._free > 0 and not self._waiting:
            self._free -= 1
            self.ranking.started(approach, subject)
            return
        waiter = _Waiter(approach, subject, asyncio.get_running_loop().create_future())
        self._waiting.append(waiter)
        try:
            await waiter.granted
        except asyncio.CancelledError:
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            elif waiter.granted.done() and not waiter.granted.cancelled():
                self.ranking.requeue(approach, subject)  # granted as it was cancelled: hand the slot on
                self.release(approach)
            raise

    def release(self, approach: str) -> None:
        """Frees the slot a job of `approach` held, for the waiting job WorkLeft picks."""
        self.ranking.stopped(approach)
        while self._waiting:
            best = self._waiting.pop(self.ranking.pick([(w.approach, w.subject) for w in self._waiting]))
            if best.granted.done():  # cancelled while it waited: its task is on its way out
                continue
            self.ranking.started(best.approach, best.subject)
            best.granted.set_result(None)
            return
        self._free += 1
