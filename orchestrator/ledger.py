"""The durable job ledger (SQLite, WAL). A job's result is written in the same transaction
that marks it done, so a kill at any moment leaves each job either done once or not done.

A job is *claimed* before it runs: the claim names the orchestrator holding it
(host:pid:run), and another orchestrator on the same ledger leaves a job that a live one holds.
The results folder's lock (orchestrator/folder_lock.py) already keeps a second orchestrator
out; claims keep the promise where that lock cannot (a ledger on a filesystem without working
locks, or a ledger copied and resumed elsewhere). The holder renews its claims while it runs
(`renew_claims`, every quarter lease); a claim is stale, and may be taken over, when it was
not renewed within the lease (FIXBENCH_CLAIM_LEASE_SECONDS, default 120 s), or at once when
its holder ran on this host and is gone (or was an earlier run with this very pid: a restarted
container).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
import uuid
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
    finished REAL,
    claimed_by TEXT,
    claimed_at REAL
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


DEFAULT_LEASE_SECONDS = 120.0


# Owners of the Ledger objects of this process: a holder with this process's pid that is not
# among them was an earlier process with the same pid (a restarted container's).
_OWNERS_HERE: set[str] = set()


def new_owner() -> str:
    """host:pid:run, unique per Ledger object (a process may open a ledger twice)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def claim_is_stale(owner: str, claimed_at: float | None, now: float, lease_seconds: float) -> bool:
    """Whether a claim by `owner` may be taken over: its process on this host is gone (or had
    our pid: an earlier run in a restarted container), or it was not renewed within the lease
    (an owner on another host cannot be asked)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host == socket.gethostname() and pid.isdigit():
        if int(pid) == os.getpid():
            return owner not in _OWNERS_HERE
        if not _pid_alive(int(pid)):
            return True
    return claimed_at is None or now - claimed_at > lease_seconds


class Ledger:
    def __init__(self, path: str | Path, owner: str | None = None, lease_seconds: float | None = None):
        self.path = Path(path)
        self.owner = owner or new_owner()
        _OWNERS_HERE.add(self.owner)
        self.lease_seconds = (float(os.environ.get("FIXBENCH_CLAIM_LEASE_SECONDS", DEFAULT_LEASE_SECONDS))
                              if lease_seconds is None else lease_seconds)
        self._db = connect(self.path, _SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "level" not in columns:  # a ledger written before levels were recorded
            self._db.execute("ALTER TABLE jobs ADD COLUMN level TEXT NOT NULL DEFAULT ''")
        for column, kind in (("claimed_by", "TEXT"), ("claimed_at", "REAL")):  # written before claims
            if column not in columns:
                self._db.execute(f"ALTER TABLE jobs ADD COLUMN {column} {kind}")

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

    def claim(self, key: str) -> str | None:
        """Claims a job that is not done for this ledger's owner and marks it running; returns
        None when claimed, else the live holder's name (the job is left to it). The update
        compares the holder it read, so of two orchestrators racing for a job one wins."""
        now = time.time()
        row = self._db.execute("SELECT state, claimed_by, claimed_at FROM jobs WHERE key=?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"job {key} is not in the ledger")
        state, holder, claimed_at = row
        if state == "done":
            return "done already"
        if (state == "running" and holder and holder != self.owner
                and not claim_is_stale(holder, claimed_at, now, self.lease_seconds)):
            return holder
        cur = self._db.execute(
            "UPDATE jobs SET state='running', attempts=attempts+1, started=?, claimed_by=?, claimed_at=?"
            " WHERE key=? AND state!='done' AND claimed_by IS ?", (now, self.owner, now, key, holder))
        if cur.rowcount == 1:
            return None
        fresh = self._db.execute("SELECT state, claimed_by FROM jobs WHERE key=?", (key,)).fetchone()
        return "done already" if fresh[0] == "done" else str(fresh[1])

    def renew_claims(self) -> int:
        """Renews every claim this owner holds on running jobs; returns how many."""
        cur = self._db.execute("UPDATE jobs SET claimed_at=? WHERE claimed_by=? AND state='running'",
                               (time.time(), self.owner))
        return cur.rowcount

    def start(self, key: str) -> None:
        """Marks a job running for this owner whoever held it (a caller that already knows it
        may: the robustness phase, tests); the scheduler claims instead."""
        now = time.time()
        self._db.execute("UPDATE jobs SET state='running', attempts=attempts+1, started=?, claimed_by=?, claimed_at=?"
                         " WHERE key=? AND state!='done'", (now, self.owner, now, key))

    def infra_error(self, key: str, message: str) -> None:
        self._db.execute("UPDATE jobs SET infra_errors=infra_errors+1, message=? WHERE key=?", (message, key))

    def release(self, key: str, message: str, status: str | None = None) -> None:
        """Back to pending (CANCELLED, or out of retries this run) so a later run takes it."""
        self._db.execute("UPDATE jobs SET state='pending', status=?, message=?, claimed_by=NULL, claimed_at=NULL"
                         " WHERE key=? AND state!='done'", (status, message, key))

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
