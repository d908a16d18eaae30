"""Scheduler throughput: N no-op jobs (default 1,000: the quick fault × N seeds, since the
job key includes the seed) against 1 and 4 replicas of the noop service on the local
runtime, printed side by side with the scaling ratio; then the orchestrator's overhead per
job as a share of job time (finetune jobs, via bench_overhead).

Throughput is jobs / (last finish − first start) read from the ledger, so service start-up
and fault upload are left out; each configuration runs in its own fresh results folder.
Every job still goes through Check, Fix (noop returns the model unchanged), Evaluate
(accuracy, on the one evaluator process) and a ledger write, so the numbers are the
platform's per-job cost, not an approach's.

Usage: python benchmarks/bench_scheduler.py [--jobs 1000] [--replicas 1 4] [--per-replica 2]
       [--overhead-seeds 3] (0 skips the overhead part)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_overhead  # noqa: E402
import yaml  # noqa: E402
from rich.console import Console  # noqa: E402

from orchestrator.ledger import Ledger  # noqa: E402
from orchestrator.spec import load_spec  # noqa: E402
from orchestrator.study import run_study  # noqa: E402


def run_config(jobs: int, replicas: int, per_replica: int, bench: Path) -> dict:
    """Runs `jobs` noop jobs on `replicas` replicas; returns throughput and per-job times."""
    with tempfile.TemporaryDirectory(prefix=f"fixbench-sched-r{replicas}-") as tmp:
        spec_path = Path(tmp) / "study.yaml"
        spec_path.write_text(yaml.safe_dump({
            "name": f"sched-r{replicas}", "suite": "quick", "seeds": list(range(jobs)),
            "approaches": [{"name": "noop", "replicas": replicas, "concurrency": per_replica}],
            "budget": {"wall_seconds": 60}, "evaluation": {"properties": ["accuracy"]},
            # The total cap never binds: every replica slot can be busy at once.
            "concurrency": {"total": replicas * per_replica},
        }))
        started = time.monotonic()
        pending = run_study(load_spec(spec_path), Path(tmp) / "out", bench, Console(quiet=True))
        total_wall = time.monotonic() - started
        ledger = Ledger(Path(tmp) / "out" / "ledger.sqlite")
        rows = list(ledger.rows(f"sched-r{replicas}"))
        ledger.close()
    done = [r for r in rows if r["state"] == "done"]
    if pending or len(done) != jobs:
        raise SystemExit(f"{replicas} replica(s): only {len(done)} of {jobs} jobs done; see the orchestrator log")
    span = max(r["finished"] for r in done) - min(r["started"] for r in done)
    results = [json.loads(r["result_json"]) for r in done]
    return {
        "replicas": replicas, "jobs": jobs, "span": span, "total_wall": total_wall, "rate": jobs / span,
        "job_ms": statistics.median(r["job_seconds"] for r in results) * 1000,
        "rows": results,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--per-replica", type=int, default=2, help="jobs in flight per replica")
    parser.add_argument("--overhead-seeds", type=int, default=3, help="finetune jobs for the overhead share (0: skip)")
    parser.add_argument("--bench", type=Path, default=ROOT / ".fixbench" / "bench")
    args = parser.parse_args()
    if args.jobs < 1 or any(r < 1 for r in args.replicas):
        parser.error("--jobs and --replicas must be ≥ 1")

    runs = [run_config(args.jobs, r, args.per_replica, args.bench) for r in args.replicas]
    base = runs[0]
    print(f"scheduler throughput: {args.jobs} noop jobs, {args.per_replica} in flight per replica")
    print(f"{'replicas':>8} {'dispatch s':>11} {'jobs/s':>8} {'median job ms':>14} {'vs ' + str(base['replicas']):>7}"
          f" {'whole run s':>12}")
    for run in runs:
        print(f"{run['replicas']:>8} {run['span']:11.2f} {run['rate']:8.1f} {run['job_ms']:14.1f} "
              f"{run['rate'] / base['rate']:6.2f}x {run['total_wall']:12.1f}")
    if len(runs) > 1:
        last = runs[-1]
        print(f"scaling ratio {last['replicas']} vs {base['replicas']} replica(s): {last['rate'] / base['rate']:.2f}x "
              f"(ideal {last['replicas'] / base['replicas']:.0f}x; Evaluate runs on one evaluator process and the "
              f"orchestrator, store and evaluator share the machine's cores)")
    print("per noop job, " + bench_overhead.breakdown(base["rows"]))
    if args.overhead_seeds:
        print(f"\norchestrator overhead per job as a share of job time ({args.overhead_seeds} finetune jobs):")
        bench_overhead.report(bench_overhead.measure(args.overhead_seeds, 8, args.bench))


if __name__ == "__main__":
    main()
