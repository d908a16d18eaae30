"""Platform overhead of a finetune job: job wall time (as the orchestrator sees it: Check,
Fix stream, fetching inputs, validating and uploading the output, Evaluate, ledger) minus the
approach's own repair() time, as a share of the job wall time. Target < 2 %.

Runs a small study (finetune × the quick fault × N seeds) through the real local runtime and
reads both times from the same jobs. Usage: python benchmarks/bench_overhead.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
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


def measure(seeds: int, epochs: int, bench: Path = ROOT / ".fixbench" / "bench", patience: int = 3) -> list[dict]:
    """Runs finetune × the quick fault × `seeds` through the local runtime; returns each job's
    result summary (job_seconds, repair_seconds, setup/output/RPC timings)."""
    with tempfile.TemporaryDirectory(prefix="fixbench-overhead-") as tmp:
        spec_path = Path(tmp) / "study.yaml"
        spec_path.write_text(yaml.safe_dump({
            "name": "overhead", "suite": "quick", "seeds": list(range(seeds)),
            "approaches": [{"name": "finetune", "params": {"epochs": epochs, "patience": patience}}],
            "budget": {"wall_seconds": 600}, "concurrency": {"total": 1},
        }))
        spec = load_spec(spec_path)
        run_study(spec, Path(tmp) / "out", bench, Console(quiet=True))
        ledger = Ledger(Path(tmp) / "out" / "ledger.sqlite")
        rows = [json.loads(r["result_json"]) for r in ledger.rows("overhead")]
        ledger.close()
    return rows


def breakdown(rows: list[dict]) -> str:
    """Mean seconds per job of each part of the platform's overhead."""
    return "where the overhead goes (mean s): " + ", ".join(
        f"{k} {sum(r[v] if isinstance(v, str) else v(r) for r in rows) / len(rows):.3f}" for k, v in [
            ("service setup (fetch inputs)", "setup_seconds"), ("output validation + upload", "output_seconds"),
            ("Check + Fix RPCs beyond the service", lambda r: r["fix_call_seconds"] - r["service_seconds"]),
            ("Evaluate + ledger", lambda r: r["job_seconds"] - r["fix_call_seconds"])])


def report(rows: list[dict]) -> float:
    """Prints the per-job table, the breakdown and the total; returns the overhead in %."""
    print(f"{'seed':>4} {'job s':>8} {'repair() s':>11} {'overhead s':>11} {'overhead %':>11}")
    for seed, r in enumerate(rows):
        over = r["job_seconds"] - r["repair_seconds"]
        print(f"{seed:>4} {r['job_seconds']:8.3f} {r['repair_seconds']:11.3f} {over:11.3f} "
              f"{over / r['job_seconds'] * 100:10.2f}%")
    print(breakdown(rows))
    job = sum(r["job_seconds"] for r in rows)
    rep = sum(r["repair_seconds"] for r in rows)
    share = (job - rep) / job * 100
    print(f"total: repair() {rep:.2f} s of {job:.2f} s job wall time; platform overhead "
          f"{share:.2f} % (target < 2 %); repair/job ratio {rep / job:.3f}")
    return share


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=3, help="early-stopping patience; = epochs runs every epoch")
    args = parser.parse_args()
    report(measure(args.seeds, args.epochs, patience=args.patience))

if __name__ == "__main__":
    main()
