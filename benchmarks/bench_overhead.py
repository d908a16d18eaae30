"""Platform overhead per job: job wall time (as the orchestrator sees it: Check, Fix stream,
fetching inputs, validating and uploading the output, Evaluate) minus the approach's own
repair() time. Targets: < 2 % of job wall time on the quick study's finetune jobs, and
< 50 ms absolute on noop jobs (whose repair() does nothing, so what is left is the harness).

Runs small studies (finetune × the quick fault × N seeds, then noop × the same) through the
real local runtime and reads every time from the same jobs' results, then prints per job
where the overhead goes. The orchestrator starts a job's Evaluate on the SDK's upload notice,
while the service still checks its output on the repair split (the two scorings were most
of a finetune job's overhead); the finetune study runs again with that switched off
(FIXBENCH_EARLY_EVALUATION=0, the order before), interleaved, and the two are printed side
by side. Usage: python benchmarks/bench_overhead.py [--seeds 3] [--noop-seeds 10] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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
            approach: str = "finetune", early_evaluation: bool = True) -> list[dict]:
    """Runs `approach` × the quick fault × `seeds` through the local runtime, one job at a
    time; returns each job's result summary (job_seconds, repair_seconds, setup/output/RPC
    timings), in seed order. `early_evaluation=False`: the Evaluate waits for the result."""
    params = {"epochs": epochs, "patience": patience} if approach == "finetune" else {}
    before = os.environ.get("FIXBENCH_EARLY_EVALUATION")
    os.environ["FIXBENCH_EARLY_EVALUATION"] = "1" if early_evaluation else "0"
    try:
        return _measure(seeds, bench, approach, params)
    finally:
        if before is None:
            os.environ.pop("FIXBENCH_EARLY_EVALUATION", None)
        else:
            os.environ["FIXBENCH_EARLY_EVALUATION"] = before


def _measure(seeds: int, bench: Path, approach: str, params: dict) -> list[dict]:
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
        # The evaluation's metrics ride along as "evaluation": outcome() compares them.
        rows = [{**json.loads(r["result_json"]), "evaluation": json.loads(r["metrics_json"] or "{}")} for r in rows]
        ledger.close()
    return rows


def outcome(rows: list[dict]) -> list:
    """What must not depend on how the job was scheduled: per seed, the status, the repaired
    model's digest, the approach's and the evaluator's metrics."""
    return [(r["status"], r["repaired_sha256"], r["approach_metrics"], r["evaluation"]) for r in rows]


# Where a job's time outside repair() goes; together they make job_seconds - repair_seconds.
PARTS = [
    ("setup", "service setup: Check in Fix, fetching inputs, seeding", lambda r: r["setup_seconds"]),
    ("output", "output validation + upload", lambda r: r["output_seconds"]),
    ("rpc", "Check RPC + Fix stream beyond the service", lambda r: r["fix_call_seconds"] - r["service_seconds"]),
    ("service", "rest of the service's Fix (results, events)",
     lambda r: r["service_seconds"] - r["setup_seconds"] - r["repair_seconds"] - r["output_seconds"]),
    ("evaluate", "Evaluate after the result (what did not overlap the output check)",
     lambda r: r["job_seconds"] - r["fix_call_seconds"]),
]
# Not part of the sum: the Evaluate call's whole length, and the part of it that ran while
# the service was still checking its output (started on the upload notice).
EXTRA = [
    ("eval all", "Evaluate call in all (fetch, validate, score the test split)", lambda r: r.get("evaluate_seconds", 0.0)),
    ("overlap", "of which overlapped the output check", lambda r: r.get("evaluate_overlap_seconds", 0.0)),
]


def breakdown(rows: list[dict]) -> str:
    """Mean milliseconds per job of each part of the platform's overhead, then the Evaluate
    call's length and overlap (not part of the sum)."""
    def mean_ms(fn):
        return sum(fn(r) for r in rows) / len(rows) * 1000

    return ("where the overhead goes (mean ms a job): " + ", ".join(f"{label} {mean_ms(fn):.1f}" for _, label, fn in PARTS)
            + "; " + ", ".join(f"{label} {mean_ms(fn):.1f}" for _, label, fn in EXTRA))


def table(rows: list[dict]) -> None:
    head = "".join(f"{k + ' ms':>12}" for k, _, _ in PARTS + EXTRA)
    print(f"{'seed':>4} {'job s':>8} {'repair() s':>11} {'overhead ms':>12} {'overhead %':>11}{head}")
    for seed, r in enumerate(rows):
        over = r["job_seconds"] - r["repair_seconds"]
        parts = "".join(f"{fn(r) * 1000:12.1f}" for _, _, fn in PARTS + EXTRA)
        print(f"{seed:>4} {r['job_seconds']:8.3f} {r['repair_seconds']:11.3f} {over * 1000:12.1f} "
              f"{over / r['job_seconds'] * 100:10.2f}%{parts}")
    print(breakdown(rows))


def share(rows: list[dict]) -> float:
    """Platform overhead as a percentage of the jobs' wall time."""
    job = sum(r["job_seconds"] for r in rows)
    return (job - sum(r["repair_seconds"] for r in rows)) / job * 100


def steady_ms(*runs: list[dict]) -> float:
    """Median overhead per job in ms over the runs, leaving out each run's first job (the
    service's first-use costs)."""
    return statistics.median((r["job_seconds"] - r["repair_seconds"]) * 1000 for rows in runs for r in (rows[1:] or rows))


def report(rows: list[dict]) -> float:
    """Prints the per-job table, the breakdown and the total; returns the overhead in %."""
    table(rows)
    job = sum(r["job_seconds"] for r in rows)
    rep = sum(r["repair_seconds"] for r in rows)
    print(f"total: repair() {rep:.2f} s of {job:.2f} s job wall time; platform overhead "
          f"{share(rows):.2f} % (target < 2 %); repair/job ratio {rep / job:.3f}; "
          f"{steady_ms(rows):.1f} ms a job after the first, first job {(rows[0]['job_seconds'] - rows[0]['repair_seconds']) * 1000:.1f} ms")
    return share(rows)


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
    parser.add_argument("--rounds", type=int, default=1,
                        help="finetune studies with and without early evaluation, interleaved (0: only with)")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    print(f"{os.cpu_count()} cores, load average {', '.join(f'{x:.2f}' for x in os.getloadavg())}")
    runs: dict[bool, list[list[dict]]] = {True: [], False: []}
    for _ in range(max(args.rounds, 1)):
        for early in (True, False) if args.rounds else (True,):
            runs[early].append(measure(args.seeds, args.epochs, patience=args.patience, early_evaluation=early))
    for early in (True, False) if args.rounds else (True,):
        for i, rows in enumerate(runs[early]):
            how = "Evaluate started on the upload notice" if early else "Evaluate after the result (FIXBENCH_EARLY_EVALUATION=0)"
            print(f"\nfinetune × quick fault, {args.seeds} seeds, one job at a time, {how}, round {i + 1}:")
            report(rows)
    if args.rounds:
        on, off = ([r for rows in runs[e] for r in rows] for e in (True, False))
        steady_on, steady_off = steady_ms(*runs[True]), steady_ms(*runs[False])
        print(f"\nside by side over {args.rounds} round(s): overhead {share(on):.2f} % with early evaluation vs "
              f"{share(off):.2f} % without; {steady_on:.1f} vs {steady_off:.1f} ms a job after the first "
              f"(ratio {steady_on / steady_off:.2f})")
        same = all(outcome(rows) == outcome(runs[True][0]) for e in (True, False) for rows in runs[e])
        print("results (status, repaired digest, approach and evaluation metrics) identical in every run: "
              f"{'yes' if same else 'NO'}")
    if args.noop_seeds:
        print(f"\nnoop × quick fault, {args.noop_seeds} seeds, one job at a time:")
        report_noop(measure(args.noop_seeds, args.epochs, approach="noop"))
    print(f"load average after: {', '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
