"""Fault injection: kill -9 the orchestrator and services (repair, evaluator, store) at
random moments during a 50-job study, resume each time, and require the final results to
equal an uninterrupted run's: no job lost, none counted twice."""

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / ".fixbench" / "bench"
SPEC = """name: chaos
suite: quick
seeds: [{seeds}]
approaches:
  - name: noop
  - name: finetune
    params: {{epochs: 1, train_ratio: 0.5}}
budget: {{wall_seconds: 120}}
concurrency: {{total: 2}}
retry: {{attempts: 8, backoff_seconds: 0.5}}
"""
COMPARED = ["approach", "fault_id", "seed", "status", "acc_before", "acc_after", "rr", "nfr", "dacc",
            "repaired_sha256", "job_key"]


def start(spec, out):
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "study", "run", str(spec), "--out", str(out),
                             "--bench", str(BENCH)], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def done_jobs(out):
    try:
        with sqlite3.connect(out / "ledger.sqlite", timeout=5) as db:
            return db.execute("SELECT count(*) FROM jobs WHERE state='done'").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_kill_9_anywhere_then_resume_loses_and_repeats_nothing(tmp_path):
    spec = tmp_path / "chaos.yaml"
    spec.write_text(SPEC.format(seeds=", ".join(str(s) for s in range(25))))
    reference = tmp_path / "reference"
    subprocess.run([sys.executable, "-m", "orchestrator.cli", "study", "run", str(spec), "--out", str(reference),
                    "--bench", str(BENCH)], cwd=ROOT, check=True, capture_output=True, timeout=900)
    expected = pd.read_csv(reference / "results.csv")
    assert len(expected) == 50 and (expected.state == "done").all()

    out = tmp_path / "chaos"
    rng = random.Random(20261123)
    kills = {"orchestrator": 0, "service": 0}
    runs = 0
    while sum(kills.values()) < 10:
        runs += 1
        for stale in (out / "run").glob("*.pid") if (out / "run").exists() else []:
            stale.unlink()
        proc = start(spec, out)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and not (out / "run" / "finetune-0.pid").exists():
            time.sleep(0.1)
        time.sleep(rng.uniform(0.5, 4.0))
        if proc.poll() is not None:
            break  # finished before we could kill it: the loop's figures show how many kills landed
        if rng.random() < 0.6:
            victim = rng.choice(["finetune-0", "noop-0", "evaluator", "store"])
            pid_file = out / "run" / f"{victim}.pid"
            if pid_file.exists():
                try:
                    os.kill(int(pid_file.read_text()), signal.SIGKILL)
                    kills["service"] += 1
                except ProcessLookupError:
                    pass
            time.sleep(rng.uniform(1.0, 3.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills["orchestrator"] += 1
        proc.wait()
    final = subprocess.run([sys.executable, "-m", "orchestrator.cli", "study", "run", str(spec), "--out", str(out),
                            "--bench", str(BENCH)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    got = pd.read_csv(out / "results.csv")
    lost = len(set(expected.job_key) - set(got[got.state == "done"].job_key))
    duplicated = len(got) - got.job_key.nunique()
    print(f"chaos: jobs {len(expected)}, runs {runs + 1}, kills {kills}, infra retries "
          f"{int(got.infra_errors.sum())}, lost {lost}, duplicated {duplicated}")
    assert sum(kills.values()) >= 10, kills
    assert lost == 0 and duplicated == 0
    pd.testing.assert_frame_equal(got[COMPARED].sort_values("job_key").reset_index(drop=True),
                                  expected[COMPARED].sort_values("job_key").reset_index(drop=True))
