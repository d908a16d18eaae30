"""Replays a finished study's job lengths through the ways of handing out total slots (issue
23 item 3): when would phase 1 have ended under first-come order, under the approach's mean
job length (the previous ranking), and under the scheduler's WorkLeft (approach speed x
subject size, approaches probed first)? A discrete-event replay, so it takes a second and
gives the same figures every time; the job lengths are those the ledger measured (under the
schedule that ran them, so contention is as it was).

Run: `.venv/bin/python benchmarks/replay_slots.py results/<study>/ledger.sqlite [--total 2]
[--replicas 1]`; `benchmarks/bench_study.py --keep DIR` keeps its runs' ledgers for this.
"""

from __future__ import annotations

import argparse
import heapq
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.ledger import Ledger  # noqa: E402
from orchestrator.total_slots import WorkLeft  # noqa: E402


class FirstCome:
    """asyncio.Semaphore's order: the job that asked first."""

    def __init__(self, jobs):
        pass

    def record(self, approach, subject, seconds, status):
        pass

    def started(self, approach, subject):
        pass

    def stopped(self, approach):
        pass

    def pick(self, waiting):
        return 0


class ApproachMean(FirstCome):
    """The ranking before WorkLeft: jobs not started x the approach's mean job (the mean of
    all finished jobs for an approach with none), no probing."""

    def __init__(self, jobs):
        self.left = Counter(a for a, _ in jobs)
        self.sums: dict[str, list[float]] = {}

    def record(self, approach, subject, seconds, status):
        total = self.sums.setdefault(approach, [0.0, 0])
        total[0] += seconds
        total[1] += 1

    def started(self, approach, subject):
        self.left[approach] -= 1

    def _mean(self, approach):
        if approach in self.sums:
            s, n = self.sums[approach]
            return s / n
        n = sum(c for _, c in self.sums.values())
        return sum(s for s, _ in self.sums.values()) / n if n else 1.0

    def pick(self, waiting):
        return max(range(len(waiting)), key=lambda i: (self.left[waiting[i][0]] * self._mean(waiting[i][0]), -i))


POLICIES = {"first come": FirstCome, "approach mean (before)": ApproachMean, "WorkLeft (now)": WorkLeft}


def replay(jobs: list[tuple[str, str, float, str]], policy_cls, total: int, replicas: int) -> tuple[float, dict[str, float]]:
    """jobs: (approach, subject, seconds, status) in the study's job order. Mirrors the scheduler: a
    job takes its approach's replica slot, then asks for a total slot; a finished job frees
    its total slot (to a job already waiting) before its replica slot."""
    policy = policy_cls([(a, s) for a, s, _, _ in jobs])
    queues: dict[str, list[tuple[str, float, str]]] = {}
    for a, s, t, status in jobs:
        queues.setdefault(a, []).append((s, t, status))
    free_replicas = {a: replicas for a in queues}
    waiting: list[tuple[str, str, float, str]] = []
    running: list[tuple[float, int, str, str, float, str]] = []  # (ends at, tie-break, approach, subject, seconds, status)
    free, now, counter, last = total, 0.0, 0, {}

    def ask(approach: str) -> None:
        nonlocal free, counter
        while free_replicas[approach] and queues[approach]:
            free_replicas[approach] -= 1
            subject, seconds, status = queues[approach].pop(0)
            if free > 0 and not waiting:
                free -= 1
                policy.started(approach, subject)
                heapq.heappush(running, (now + seconds, counter, approach, subject, seconds, status))
                counter += 1
            else:
                waiting.append((approach, subject, seconds, status))

    for approach in dict.fromkeys(a for a, _, _, _ in jobs):  # each approach's head job, in job order
        ask(approach)
    while running:
        now, _, approach, subject, seconds, status = heapq.heappop(running)
        last[approach] = now
        policy.record(approach, subject, seconds, status)
        policy.stopped(approach)
        if waiting:
            a, s, t, st = waiting.pop(policy.pick([(w[0], w[1]) for w in waiting]))
            policy.started(a, s)
            heapq.heappush(running, (now + t, counter, a, s, t, st))
            counter += 1
        else:
            free += 1
        free_replicas[approach] += 1
        ask(approach)
    return now, last


def lower_bound(job_seconds, total: int, replicas: int = 1) -> tuple[float, str, float]:
    """(bound, approach, its job-seconds): no schedule of these (approach, seconds) jobs ends
    before the longest approach's chain (its replicas run its jobs in turn) or before `total`
    slots have run every job, so the larger of the two is the bound to compare with."""
    chains: Counter[str] = Counter()
    for approach, seconds in job_seconds:
        chains[approach] += seconds
    longest, chain = chains.most_common(1)[0] if chains else ("-", 0.0)
    return max(chain / replicas, sum(chains.values()) / total), longest, chain


def ledger_jobs(path: Path) -> list[tuple[str, str, float, str]]:
    ledger = Ledger(path)
    try:
        rows = sorted(ledger.rows(), key=lambda r: r["created"])
    finally:
        ledger.close()
    jobs = []
    for r in rows:
        seconds = json.loads(r["result_json"] or "{}").get("job_seconds")
        if r["state"] == "done" and isinstance(seconds, int | float):
            jobs.append((r["approach"], r["fault_id"], float(seconds), r["status"] or ""))
    return jobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ledger", type=Path)
    parser.add_argument("--total", type=int, default=2, help="concurrency.total")
    parser.add_argument("--replicas", type=int, default=1, help="replicas per approach")
    args = parser.parse_args(argv)
    jobs = ledger_jobs(args.ledger)
    if not jobs:
        raise SystemExit(f"{args.ledger}: no finished job with a measured length")
    bound, longest, chain = lower_bound(((a, t) for a, _, t, _ in jobs), args.total, args.replicas)
    work = sum(t for _, _, t, _ in jobs)
    print(f"{len(jobs)} jobs of {len({a for a, _, _, _ in jobs})} approaches, {work:.0f} job-seconds; lower bound "
          f"{bound:.0f} s (longest chain {longest} {chain:.0f} s over {args.replicas} replica(s), "
          f"job-seconds per slot {work / args.total:.0f} s)")
    print(f"{'policy':<24} {'phase 1 s':>10} {'x bound':>8}  last three approaches to finish (s)")
    for name, cls in POLICIES.items():
        end, last = replay(jobs, cls, args.total, args.replicas)
        tail = ", ".join(f"{a} {t:.0f}" for a, t in sorted(last.items(), key=lambda kv: -kv[1])[:3])
        print(f"{name:<24} {end:10.0f} {end / bound:8.2f}  {tail}")


if __name__ == "__main__":
    main()
