"""Tables that sit beside the job ledger in the same SQLite file (WAL), so that a results
folder's `ledger.sqlite` alone is enough to rebuild results.csv, the paper tables and
report.html:

- `study_faults`: each fault's bundle metadata (dataset, architecture, family, stand-in,
  ground truth…), from which a job's paper "subject" (dataset → model) is derived;
- `evaluation_details`: per job, the test indices the original and the repaired model
  classify correctly (from the evaluator's details), the input of the robustness phase;
- `robustness_sets` / `robustness_jobs`: the robustness phase (see robustness_phase.py);
- `study_current_jobs`: the job keys of the spec as last run, so results leave out rows of
  an earlier version of the spec kept under the same study name.

Kept apart from `orchestrator/ledger.py` so the job ledger's schema stays as it is; every
write is one statement or one transaction, so a kill leaves each row whole or absent.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from orchestrator.ledger import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS study_runs (
    study TEXT NOT NULL,
    started REAL NOT NULL,
    spec TEXT NOT NULL,
    overrides_json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS study_faults (
    study TEXT NOT NULL,
    fault_id TEXT NOT NULL,
    meta_json TEXT NOT NULL,
    PRIMARY KEY (study, fault_id)
);
CREATE TABLE IF NOT EXISTS evaluation_details (
    key TEXT PRIMARY KEY,
    repaired_sha256 TEXT NOT NULL,
    repaired_size INTEGER NOT NULL,
    correct_before_json TEXT,
    correct_after_json TEXT,
    recorded REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS robustness_sets (
    study TEXT NOT NULL,
    fault_id TEXT NOT NULL,
    members_sha TEXT NOT NULL,
    indices_json TEXT NOT NULL,
    indices_sha TEXT NOT NULL,
    candidates INTEGER NOT NULL,
    created REAL NOT NULL,
    PRIMARY KEY (study, fault_id)
);
CREATE TABLE IF NOT EXISTS robustness_jobs (
    key TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    fault_id TEXT NOT NULL,
    indices_sha TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    message TEXT,
    metrics_json TEXT,
    finished REAL
);
CREATE INDEX IF NOT EXISTS robustness_jobs_study ON robustness_jobs(study, fault_id, state);
CREATE TABLE IF NOT EXISTS study_current_jobs (
    study TEXT PRIMARY KEY,
    keys_json TEXT NOT NULL,
    recorded REAL NOT NULL
);
"""

# Fault bundle fields kept per study (digests and the filesystem root are not needed to
# describe a subject, and the root differs between machines).
_FAULT_FIELDS = ("id", "family", "dataset", "architecture", "description", "input_shape", "num_classes",
                 "seed", "train_seconds", "stand_in", "sensitive_attribute", "operator", "recipe",
                 "ground_truth", "metrics")


class StudyTables:
    """The extra tables of one ledger file; opens its own connection (WAL allows several)."""

    def __init__(self, ledger_path: str | Path):
        self.path = Path(ledger_path)
        self._db = connect(self.path, _SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StudyTables:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- faults -------------------------------------------------------------------------
    def record_fault(self, study: str, fault: Any, order: int = 0, stands_in_for: str | None = None) -> None:
        """Stores a fault's metadata for `study` (a Fault, or a mapping with its fields);
        `order` is its position in the suite, the column order of the paper tables."""
        data = fault.to_json() if hasattr(fault, "to_json") else dict(fault)
        if "id" not in data:
            raise ValueError("fault metadata lacks its 'id'")
        meta = {k: data.get(k) for k in _FAULT_FIELDS}
        meta["stands_in_for"] = stands_in_for if stands_in_for is not None else data.get("stands_in_for")
        meta["order"] = int(order)
        self._db.execute("INSERT OR REPLACE INTO study_faults(study, fault_id, meta_json) VALUES (?,?,?)",
                         (study, meta["id"], json.dumps(meta, sort_keys=True)))

    def record_run(self, study: str, spec_path: str, overrides: list[str]) -> None:
        """One row per `study run`: which spec file and which `--set` overrides it ran with."""
        self._db.execute("INSERT INTO study_runs(study, started, spec, overrides_json) VALUES (?,?,?,?)",
                         (study, time.time(), spec_path, json.dumps(list(overrides))))

    def runs(self, study: str) -> list[dict[str, Any]]:
        cur = self._db.execute("SELECT started, spec, overrides_json FROM study_runs WHERE study=? ORDER BY started",
                               (study,))
        return [{"started": t, "spec": sp, "overrides": json.loads(o)} for t, sp, o in cur.fetchall()]

    def record_current_jobs(self, study: str, keys: list[str]) -> None:
        """The job keys of `study`'s spec as last run: results and reports show these, not
        rows an earlier version of the spec left under the same study name."""
        self._db.execute("INSERT OR REPLACE INTO study_current_jobs(study, keys_json, recorded) VALUES (?,?,?)",
                         (study, json.dumps(sorted(set(keys))), time.time()))

    def current_jobs(self, study: str) -> set[str] | None:
        """The keys recorded by record_current_jobs, or None (ledgers from before it)."""
        row = self._db.execute("SELECT keys_json FROM study_current_jobs WHERE study=?", (study,)).fetchone()
        return None if row is None else set(json.loads(row[0]))

    def faults(self, study: str) -> dict[str, dict[str, Any]]:
        """fault id → metadata recorded for `study`."""
        cur = self._db.execute("SELECT fault_id, meta_json FROM study_faults WHERE study=?", (study,))
        return {fid: json.loads(meta) for fid, meta in cur}

    # --- evaluation details -------------------------------------------------------------
    def record_details(self, key: str, repaired_sha256: str, repaired_size: int, correct_before: list[int] | None,
                       correct_after: list[int] | None) -> None:
        """Stores the evaluated repaired model's digest (empty: the original) and which test
        indices the original / repaired model of job `key` classify correctly. Written
        before the job is marked done, so a done job always has them."""
        self._db.execute(
            "INSERT OR REPLACE INTO evaluation_details(key, repaired_sha256, repaired_size, correct_before_json,"
            " correct_after_json, recorded) VALUES (?,?,?,?,?,?)",
            (key, repaired_sha256, int(repaired_size), None if correct_before is None else json.dumps(correct_before),
             None if correct_after is None else json.dumps(correct_after), time.time()),
        )

    def details(self, key: str) -> dict[str, Any] | None:
        """{repaired_sha256, repaired_size, correct_before, correct_after} of job `key`, or
        None when never recorded."""
        row = self._db.execute("SELECT repaired_sha256, repaired_size, correct_before_json, correct_after_json"
                               " FROM evaluation_details WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        return {"repaired_sha256": row[0], "repaired_size": row[1],
                "correct_before": None if row[2] is None else json.loads(row[2]),
                "correct_after": None if row[3] is None else json.loads(row[3])}

    # --- robustness phase ---------------------------------------------------------------
    def robustness_set(self, study: str, fault_id: str) -> dict[str, Any] | None:
        row = self._db.execute(
            "SELECT members_sha, indices_json, indices_sha, candidates FROM robustness_sets WHERE study=? AND fault_id=?",
            (study, fault_id)).fetchone()
        if row is None:
            return None
        return {"members_sha": row[0], "indices": json.loads(row[1]), "indices_sha": row[2], "candidates": row[3]}

    def save_robustness_set(self, study: str, fault_id: str, members_sha: str, indices: list[int],
                            indices_sha: str, candidates: int) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO robustness_sets(study, fault_id, members_sha, indices_json, indices_sha, candidates,"
            " created) VALUES (?,?,?,?,?,?,?)",
            (study, fault_id, members_sha, json.dumps(indices), indices_sha, candidates, time.time()),
        )

    def add_robustness_job(self, key: str, study: str, fault_id: str, indices_sha: str) -> None:
        """Registers job `key` for the phase on index set `indices_sha`; a row made for an
        older set (the study gained jobs, so the common set changed) goes back to pending."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO robustness_jobs(key, study, fault_id, indices_sha) VALUES (?,?,?,?)",
                (key, study, fault_id, indices_sha))
            self._db.execute(
                "UPDATE robustness_jobs SET state='pending', indices_sha=?, metrics_json=NULL, message=NULL,"
                " finished=NULL WHERE key=? AND indices_sha!=?", (indices_sha, key, indices_sha))

    def robustness_state(self, key: str) -> str | None:
        row = self._db.execute("SELECT state FROM robustness_jobs WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def start_robustness_job(self, key: str) -> None:
        self._db.execute("UPDATE robustness_jobs SET attempts=attempts+1 WHERE key=?", (key,))

    def note_robustness_job(self, key: str, message: str) -> None:
        self._db.execute("UPDATE robustness_jobs SET message=? WHERE key=?", (message, key))

    def finish_robustness_job(self, key: str, indices_sha: str, metrics: dict[str, Any], message: str) -> bool:
        """Records the phase's metrics once, for the index set they were computed on;
        returns False when the row was already done or now belongs to another set."""
        cur = self._db.execute(
            "UPDATE robustness_jobs SET state='done', metrics_json=?, message=?, finished=?"
            " WHERE key=? AND state!='done' AND indices_sha=?",
            (json.dumps(metrics, sort_keys=True), message, time.time(), key, indices_sha))
        return cur.rowcount == 1

    def robustness_rows(self, study: str) -> dict[str, dict[str, Any]]:
        """job key → {state, attempts, message, metrics, indices_sha} of the phase's rows."""
        cur = self._db.execute(
            "SELECT key, state, attempts, message, metrics_json, indices_sha FROM robustness_jobs WHERE study=?",
            (study,))
        return {k: {"state": s, "attempts": a, "message": m or "", "metrics": json.loads(mj) if mj else {},
                    "indices_sha": sha}
                for k, s, a, m, mj, sha in cur}

    def robustness_metrics(self, study: str) -> dict[str, dict[str, Any]]:
        """job key → robustness metrics of the done rows (merged into results)."""
        return {k: r["metrics"] for k, r in self.robustness_rows(study).items() if r["state"] == "done"}

