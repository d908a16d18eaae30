"""The durable job ledger (SQLite, WAL). A job's result is written in the same transaction
that marks it done, so a kill at any moment leaves each job either done once or not done."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    key TEXT PRIMARY KEY,
    study TEXT NOT NULL,
    approach TEXT NOT NULL,
    approach_version TEXT NOT NULL,
    -- Describe's level (baseline, model, layer, neuron, recipe): the report orders and
    -- groups by it instead of a list of names
    level TEXT NOT NULL DEFAULT '',
    fault_id TEXT NOT NULL,
    seed INTEGER NOT NULL,
    params_json TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    status TEXT,
    message TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    infra_errors INTEGER NOT NULL DEFAULT 0,
    result_json TEXT,
    metrics_json TEXT,
    created REAL NOT NULL,
    started REAL,
    finished REAL
);
CREATE INDEX IF NOT EXISTS jobs_study ON jobs(study, state);
-- The version each approach's Describe answered, per fingerprint of its service folder, so
-- that a run can compute its job keys (and find nothing left to run) before starting any
-- service: the version is a class attribute, so it changes only with the folder's content.
CREATE TABLE IF NOT EXISTS approach_versions (
    study TEXT NOT NULL,
    approach TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    version TEXT NOT NULL,
    recorded REAL NOT NULL,
    PRIMARY KEY (study, approach, fingerprint)
);
"""


def connect(path: Path, schema: str) -> sqlite3.Connection:
    """A connection to the ledger file in WAL mode with full syncs (several connections and
    processes may share it), with `schema` applied."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(schema)
    return db


class Ledger:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db = connect(self.path, _SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "level" not in columns:  # a ledger written before levels were recorded
            self._db.execute("ALTER TABLE jobs ADD COLUMN level TEXT NOT NULL DEFAULT ''")

    def close(self) -> None:
        self._db.close()

    def add(self, key: str, study: str, approach: str, version: str, fault_id: str, seed: int, params: dict,
            level: str = "") -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO jobs(key, study, approach, approach_version, level, fault_id, seed, params_json,"
            " created) VALUES (?,?,?,?,?,?,?,?,?)",
            (key, study, approach, version, level, fault_id, seed, json.dumps(params, sort_keys=True), time.time()),
        )

    def state(self, key: str) -> str | None:
        row = self._db.execute("SELECT state FROM jobs WHERE key=?", (key,)).fetchone()
        return row[0] if row else None

    def start(self, key: str) -> None:
        self._db.execute("UPDATE jobs SET state='running', attempts=attempts+1, started=? WHERE key=? AND state!='done'",
                         (time.time(), key))

    def infra_error(self, key: str, message: str) -> None:
        self._db.execute("UPDATE jobs SET infra_errors=infra_errors+1, message=? WHERE key=?", (message, key))

    def release(self, key: str, message: str, status: str | None = None) -> None:
        """Back to pending (CANCELLED, or out of retries this run) so a later run takes it."""
        self._db.execute("UPDATE jobs SET state='pending', status=?, message=? WHERE key=? AND state!='done'",
                         (status, message, key))

    def finish(self, key: str, status: str, message: str, result: dict[str, Any], metrics: dict[str, Any]) -> bool:
        """Records the job's outcome once; returns False when it was already done."""
        cur = self._db.execute(
            "UPDATE jobs SET state='done', status=?, message=?, result_json=?, metrics_json=?, finished=?"
            " WHERE key=? AND state!='done'",
            (status, message, json.dumps(result, sort_keys=True), json.dumps(metrics, sort_keys=True), time.time(), key),
        )
        return cur.rowcount == 1

    def rows(self, study: str | None = None) -> Iterator[dict[str, Any]]:
        cur = self._db.execute(
            "SELECT * FROM jobs" + (" WHERE study=?" if study else "") + " ORDER BY approach, fault_id, seed",
            (study,) if study else (),
        )
        names = [d[0] for d in cur.description]
        for row in cur:
            yield dict(zip(names, row, strict=True))

    def record_version(self, study: str, approach: str, fingerprint: str, version: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO approach_versions(study, approach, fingerprint, version, recorded)"
                         " VALUES (?,?,?,?,?)", (study, approach, fingerprint, version, time.time()))

    def known_version(self, study: str, approach: str, fingerprint: str) -> str | None:
        """The version Describe answered for the service folder with this fingerprint, if any."""
        row = self._db.execute("SELECT version FROM approach_versions WHERE study=? AND approach=? AND fingerprint=?",
                               (study, approach, fingerprint)).fetchone()
        return row[0] if row else None

    def counts(self, study: str | None = None) -> dict[str, int]:
        cur = self._db.execute(
            "SELECT state, count(*) FROM jobs" + (" WHERE study=?" if study else "") + " GROUP BY state",
            (study,) if study else (),
        )
        return dict(cur.fetchall())
