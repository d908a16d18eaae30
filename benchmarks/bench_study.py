"""A whole study at 1 and 2 concurrent jobs (issue 23 items 3-4): study wall time, the share
of the machine's core-seconds spent inside the approaches' repair(), the speed-up of 2 over
1, and the peak RSS of the store, the evaluator and each approach service during the run.

Runs `fixbench study run studies/you2026.yaml` (scale, approaches and seeds from the flags)
through the local runtime into a fresh results folder per concurrency, and samples the RSS
of the processes the runtime started (their pids are in <out>/run/*.pid) twice a second.

Run: `.venv/bin/python benchmarks/bench_study.py [--scale tiny] [--approaches noop,finetune]
[--seeds 1] [--concurrency 1,2]`. With every approach of services/ the study is long on a
small machine: --approaches takes a few.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
import yaml  # noqa: E402
from replay_slots import lower_bound  # noqa: E402  (beside this script)

from orchestrator.ledger import Ledger  # noqa: E402


def all_approaches() -> list[str]:
    """Every approach service (services/_template* are scaffolds, not approaches)."""
    return sorted(p.parent.name for p in (ROOT / "services").glob("*/service.toml") if not p.parent.name.startswith("_"))


class PeakRss:
    """Samples the RSS of every process named by <out>/run/*.pid (MiB, the largest seen)."""

    def __init__(self, out: Path):
        self.run, self.peak = out / "run", {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            for pid_file in self.run.glob("*.pid") if self.run.is_dir() else []:
                try:
                    rss = psutil.Process(int(pid_file.read_text())).memory_info().rss / 2**20
                except (ValueError, OSError, psutil.Error):
                    continue
                self.peak[pid_file.stem] = max(self.peak.get(pid_file.stem, 0.0), rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def run_once(spec: dict, out: Path, scale: str, bench: Path) -> dict:
    spec_path = out.parent / f"{out.name}.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with PeakRss(out) as rss:
        started_at = time.time()  # the ledger's timestamps are wall-clock
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "orchestrator.cli", "study", "run", str(spec_path), "--out",
                               str(out), "--bench", str(bench), "--scale", scale], cwd=ROOT, env=env,
                              capture_output=True, text=True)
        wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"the study failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    ledger = Ledger(out / "ledger.sqlite")
    rows = list(ledger.rows())
    ledger.close()
    results = [json.loads(r["result_json"] or "{}") for r in rows]
    repair = sum(float(res.get("repair_seconds") or 0.0) for res in results)
    in_jobs = sum(float(res.get("job_seconds") or 0.0) for res in results)
    statuses: dict[str, int] = {}
    for r in rows:
        statuses[r["status"] or r["state"]] = statuses.get(r["status"] or r["state"], 0) + 1
    last_by_approach: dict[str, float] = {}
    for r in rows:
        if r["finished"]:
            last_by_approach[r["approach"]] = max(last_by_approach.get(r["approach"], 0.0), float(r["finished"]) - started_at)
    # Phase 1 (every repair and its Evaluate) ends with the last job; the robustness phase
    # (PGD on the inputs every model of a fault gets right) and the report follow it.
    phase1 = max(last_by_approach.values(), default=wall)
    # The services start before the first job: the schedule is judged from there.
    first_start = min((float(r["started"]) - started_at for r in rows if r["started"]), default=0.0)
    bound, *longest = lower_bound(((r["approach"], float(res.get("job_seconds") or 0.0))
                                   for r, res in zip(rows, results, strict=True)), spec["concurrency"]["total"])
    return {"wall": wall, "phase1": phase1, "repair": repair, "in_jobs": in_jobs, "jobs": len(rows),
            "statuses": statuses, "rss": rss.peak, "last": last_by_approach, "longest": longest, "bound": bound,
            "first_start": first_start}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="tiny")
    parser.add_argument("--approaches", default=",".join(all_approaches()), help="comma-separated service names")
    parser.add_argument("--seeds", type=int, default=1)
    parser.add_argument("--concurrency", default="1,2")
    parser.add_argument("--bench", type=Path, default=ROOT / ".fixbench" / "bench")
    parser.add_argument("--keep", type=Path, help="write each run's results folder (ledger, logs) here instead of a temporary one")
    args = parser.parse_args(argv)
    base = yaml.safe_load((ROOT / "studies" / "you2026.yaml").read_text())
    given = {a["name"]: a for a in base["approaches"]}
    approaches = [given.get(name, {"name": name}) for name in args.approaches.split(",") if name]
    cores = os.cpu_count() or 1
    # The faults are built (or found in the cache) first, outside the timed runs: the first
    # run would otherwise pay for building them and the speed-up would be flattered.
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "bench", "build", base["suite"], "--scale", args.scale,
                    "--bench", str(args.bench)], cwd=ROOT, check=True, capture_output=True)
    print(f"faults of {base['suite']} --scale {args.scale} ready in {time.perf_counter() - t:.1f} s (not timed below)")
    results = {}
    with tempfile.TemporaryDirectory(prefix="fixbench-study-bench-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        for c in [int(x) for x in args.concurrency.split(",")]:
            spec = {**base, "name": f"bench-c{c}", "seeds": list(range(args.seeds)), "approaches": approaches,
                    "concurrency": {"total": c}}
            results[c] = run_once(spec, where / f"c{c}", args.scale, args.bench)
    print(f"you2026 --scale {args.scale}, {len(approaches)} approach(es) ({args.approaches}), {args.seeds} seed(s), "
          f"{cores} cores, load average {os.getloadavg()[0]:.1f}")
    print("  wall: the whole `fixbench study run`; phase 1: until the last job's result (repairs and their "
          "Evaluate); in repair(): the approaches' repair() seconds as a share of the cores' seconds")
    print(f"{'concurrent':>10} {'jobs':>5} {'wall s':>9} {'phase 1 s':>10} {'repair() s':>11} {'in repair()':>12} "
          f"{'phase 1':>8} {'in jobs':>8}  statuses")
    for c, r in results.items():
        share = r["repair"] / (r["wall"] * cores) * 100
        share1 = r["repair"] / (r["phase1"] * cores) * 100
        jobs_share = r["in_jobs"] / (r["phase1"] * cores) * 100
        print(f"{c:>10} {r['jobs']:>5} {r['wall']:9.1f} {r['phase1']:10.1f} {r['repair']:11.1f} {share:11.1f}% "
              f"{share1:7.1f}% {jobs_share:7.1f}%  {r['statuses']}")
    if 1 in results and 2 in results:
        print(f"speed-up of 2 concurrent jobs over 1: {results[1]['wall'] / results[2]['wall']:.2f}x "
              f"(phase 1: {results[1]['phase1'] / results[2]['phase1']:.2f}x)")
    for c, r in results.items():
        name, seconds = r["longest"]
        scheduled = r["phase1"] - r["first_start"]
        print(f"  {c} concurrent: from the first job's start ({r['first_start']:.0f} s) to phase 1's end took {scheduled:.0f} s, "
              f"{scheduled / r['bound']:.2f}x its lower bound of {r['bound']:.0f} s, the "
              f"larger of the longest approach's job-seconds ({name} {seconds:.0f} s, one replica) and the job-seconds "
              f"per slot ({r['in_jobs'] / c:.0f} s)")
    for c, r in results.items():
        order = sorted(r["last"].items(), key=lambda kv: kv[1])
        print(f"  {c} concurrent, each approach's last job done at (s): "
              + ", ".join(f"{name} {t:.0f}" for name, t in order))
    print("peak RSS (MiB) during the study:")
    for c, r in results.items():
        print(f"  {c} concurrent: " + ", ".join(f"{name} {mib:.0f}" for name, mib in sorted(r["rss"].items())))


if __name__ == "__main__":
    main()
