"""Platform overhead per job: job wall time (as the orchestrator sees it: Check, Fix stream,
fetching inputs, validating and uploading the output, Evaluate) minus the approach's own
repair() time. Targets: < 2 % of job wall time on the quick study's finetune jobs, and
< 50 ms absolute on noop jobs (whose repair() does nothing, so what is left is the harness).

Runs small studies (finetune × the quick fault × N seeds, then noop × the same) through the
real local runtime and reads every time from the same jobs' results, then prints per job
where the overhead goes. Usage: python benchmarks/bench_overhead.py [--seeds 3] [--noop-seeds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from rich.console import Console  # noqa: E402

from orchestrator.ledger import Ledger  # noqa: E402
from orchestrator.spec import load_spec  # noqa: E402
from orchestrator.study import run_study  # noqa: E402


def measure(seeds: int, epochs: int, bench: Path = ROOT / ".fixbench" / "bench", patience: int = 3,
            approach: str = "finetune") -> list[dict]:
    """Runs `approach` × the quick fault × `seeds` through the local runtime, one job at a
    time; returns each job's result summary (job_seconds, repair_seconds, setup/output/RPC
    timings), in seed order."""
    params = {"epochs": epochs, "patience": patience} if approach == "finetune" else {}
    with tempfile.TemporaryDirectory(prefix="fixbench-overhead-") as tmp:
        spec_path = Path(tmp) / "study.yaml"
        spec_path.write_text(yaml.safe_dump({
            "name": "overhead", "suite": "quick", "seeds": list(range(seeds)),
            "approaches": [{"name": approach, "params": params}],
            "budget": {"wall_seconds": 600}, "concurrency": {"total": 1},
        }))
        spec = load_spec(spec_path)
        run_study(spec, Path(tmp) / "out", bench, Console(quiet=True))
        ledger = Ledger(Path(tmp) / "out" / "ledger.sqlite")
        rows = sorted(ledger.rows("overhead"), key=lambda r: r["seed"])
        rows = [json.loads(r["result_json"]) for r in rows]
        ledger.close()
    return rows


# Where a job's time outside repair() goes; together they make job_seconds - repair_seconds.
PARTS = [
    ("setup", "service setup: Check in Fix, fetching inputs, seeding", lambda r: r["setup_seconds"]),
    ("output", "output validation + upload", lambda r: r["output_seconds"]),
    ("rpc", "Check RPC + Fix stream beyond the service", lambda r: r["fix_call_seconds"] - r["service_seconds"]),
    ("service", "rest of the service's Fix (results, events)",
     lambda r: r["service_seconds"] - r["setup_seconds"] - r["repair_seconds"] - r["output_seconds"]),
    ("evaluate", "Evaluate (fetch, validate, score the test split)", lambda r: r["job_seconds"] - r["fix_call_seconds"]),
]


def breakdown(rows: list[dict]) -> str:
    """Mean seconds per job of each part of the platform's overhead."""
    return "where the overhead goes (mean s): " + ", ".join(
        f"{label} {sum(fn(r) for r in rows) / len(rows):.3f}" for _, label, fn in PARTS)


def table(rows: list[dict]) -> None:
    head = "".join(f"{k + ' ms':>12}" for k, _, _ in PARTS)
    print(f"{'seed':>4} {'job s':>8} {'repair() s':>11} {'overhead ms':>12} {'overhead %':>11}{head}")
    for seed, r in enumerate(rows):
        over = r["job_seconds"] - r["repair_seconds"]
        parts = "".join(f"{fn(r) * 1000:12.1f}" for _, _, fn in PARTS)
        print(f"{seed:>4} {r['job_seconds']:8.3f} {r['repair_seconds']:11.3f} {over * 1000:12.1f} "
              f"{over / r['job_seconds'] * 100:10.2f}%{parts}")
    print(breakdown(rows))


def report(rows: list[dict]) -> float:
    """Prints the per-job table, the breakdown and the total; returns the overhead in %."""
    table(rows)
    job = sum(r["job_seconds"] for r in rows)
    rep = sum(r["repair_seconds"] for r in rows)
    share = (job - rep) / job * 100
    print(f"total: repair() {rep:.2f} s of {job:.2f} s job wall time; platform overhead "
          f"{share:.2f} % (target < 2 %); repair/job ratio {rep / job:.3f}")
    return share


def report_noop(rows: list[dict]) -> float:
    """Prints the noop jobs' table; returns the median overhead per job in ms. The first job
    of a service also pays its first-use costs (imports, the original model's scores), so the
    median is the steady state and the first job is printed apart."""
    table(rows)
    over = sorted((r["job_seconds"] - r["repair_seconds"]) * 1000 for r in rows)
    median = over[len(over) // 2]
    first = (rows[0]["job_seconds"] - rows[0]["repair_seconds"]) * 1000
    print(f"noop: median overhead {median:.1f} ms a job (target < 50 ms), first job {first:.1f} ms, "
          f"max {over[-1]:.1f} ms, over {len(rows)} jobs")
    return median


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience; = epochs runs every epoch")
    parser.add_argument("--noop-seeds", type=int, default=10, help="noop jobs for the absolute overhead (0: skip)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"{os.cpu_count()} cores, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"finetune × quick fault, {args.seeds} seeds, one job at a time:")
    report(measure(args.seeds, args.epochs, patience=args.patience))
    if args.noop_seeds:
        print(f"\nnoop × quick fault, {args.noop_seeds} seeds, one job at a time:")
        report_noop(measure(args.noop_seeds, args.epochs, approach="noop"))
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
