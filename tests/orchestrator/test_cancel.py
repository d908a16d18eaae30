"""Ctrl-C on a running study: in-flight jobs are cancelled cleanly (CANCELLED, back to
pending), every service process is stopped, and running the study again finishes it."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import interruptible

ROOT = Path(__file__).resolve().parents[2]
SPEC = """name: cancel
suite: quick
seeds: [0, 1, 2]
approaches:
  - name: finetune
    params: {epochs: 15, patience: 15}
budget: {wall_seconds: 300}
concurrency: {total: 1}
"""


def running_jobs(ledger: Path) -> int:
    try:
        with sqlite3.connect(ledger, timeout=5) as db:
            return db.execute("SELECT count(*) FROM jobs WHERE state='running'").fetchone()[0]
    except sqlite3.Error:
        return 0


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.slow
def test_ctrl_c_cancels_in_flight_jobs_and_the_study_resumes(tmp_path):
    spec, out = tmp_path / "cancel.yaml", tmp_path / "out"
    spec.write_text(SPEC)
    cmd = [sys.executable, "-m", "orchestrator.cli", "study", "run", str(spec), "--out", str(out),
           "--bench", str(ROOT / ".fixbench" / "bench")]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=interruptible)
    deadline = time.monotonic() + 180
    while running_jobs(out / "ledger.sqlite") == 0 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    time.sleep(1.0)  # well inside the first job's fine-tuning
    pids = [int(p.read_text()) for p in (out / "run").glob("*.pid")]
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "interrupted" in output
    with sqlite3.connect(out / "ledger.sqlite") as db:
        states = db.execute("SELECT state, status FROM jobs").fetchall()
    assert ("running", None) not in states and all(state != "running" for state, _ in states)
    assert ("pending", "CANCELLED") in states, states
    assert pids and not [p for p in pids if alive(p)], "a service outlived the cancelled study"

    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout[-3000:]
    frame = pd.read_csv(out / "results.csv")
    assert len(frame) == 3 and (frame.state == "done").all() and frame.job_key.is_unique
