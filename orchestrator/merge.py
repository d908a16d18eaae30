"""One study's results from several parts run apart (`fixbench study merge`): a study too
long for one machine or one sitting is run as parts, each restricted to some of the suite's
faults (`--set 'faults=[...]'`), on one machine or several, and the parts' ledgers are
merged into one results folder whose report covers every fault.

Honest only if every comparison stays inside one build of a fault: the statistics compare
runs on the same fault (over seeds), never across faults, so each fault's jobs must come
from one build. A fault id that appears in two parts must therefore have the same recorded
metadata there (a rebuild on another CPU gives other accuracies and is refused, naming the
fault), and a job key (which includes the fault files' digests) found in two parts must have
the same result, measured times aside; a job done in one part and not in the other is taken as done. The parts
must hold the same study name; the merge never writes into a part."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

from orchestrator.ledger import Ledger
from orchestrator.study_tables import StudyTables

# Fault metadata that differs between two runs of the same build (a measured time).
# Fault metadata that differs between two runs of the same build: a measured time, and the
# fault's position among the faults of its run (ledgers from before it was the suite's).
_UNSTABLE_FAULT_FIELDS = ("train_seconds", "order")
def _outcome(row: sqlite3.Row) -> tuple:
    """What a job computed: its status, result and metrics without the measured times
    (`*_seconds` at any depth, e.g. an approach's search_seconds), which differ between two
    runs of the same job."""

    def timeless(value):
        if isinstance(value, dict):
            return {k: timeless(v) for k, v in value.items() if not k.endswith("_seconds")}
        if isinstance(value, list):
            return [timeless(v) for v in value]
        return value

    return (row["state"], row["status"], timeless(json.loads(row["result_json"] or "null")),
            timeless(json.loads(row["metrics_json"] or "null")))


class MergeError(ValueError):
    """The parts cannot be merged; the message names the part and the fault or job."""


def _rows(path: Path, sql: str, args: tuple = ()) -> list[sqlite3.Row]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        return db.execute(sql, args).fetchall()
    except sqlite3.OperationalError as exc:  # a table an older ledger lacks
        if "no such table" in str(exc):
            return []
        raise
    finally:
        db.close()


def _study_of(path: Path, study: str | None) -> str:
    names = sorted({r["study"] for r in _rows(path, "SELECT DISTINCT study FROM jobs")})
    if study is not None:
        if study not in names:
            raise MergeError(f"{path} holds no study {study!r}; it holds {names}")
        return study
    if len(names) != 1:
        raise MergeError(f"{path} holds {len(names)} studies ({names}): name one with --study")
    return names[0]


def _stable(meta_json: str) -> dict:
    meta = json.loads(meta_json)
    for name in _UNSTABLE_FAULT_FIELDS:
        meta.pop(name, None)
    return meta


def merge_parts(parts: list[Path], out: Path, study: str | None = None) -> dict[str, int]:
    """Writes out/ledger.sqlite from the parts' ledgers (and copies their job logs); returns
    counts of what was merged. Raises MergeError before writing anything when the parts do
    not fit together."""
    if len(parts) < 2:
        raise MergeError("merge needs at least two results folders")
    ledgers = []
    for part in parts:
        path = part / "ledger.sqlite"
        if not path.is_file():
            raise MergeError(f"no ledger at {path}: is {part} a study's results folder?")
        ledgers.append(path)
    target = out / "ledger.sqlite"
    if target.exists() or out.resolve() in {p.resolve() for p in parts}:
        raise MergeError(f"{out} already holds a ledger: merge into a new folder")
    names = {_study_of(path, study) for path in ledgers}
    if len(names) != 1:
        raise MergeError(f"the parts hold different studies: {sorted(names)}")
    name = names.pop()

    # Faults: one build each (module doc).
    faults: dict[str, tuple[Path, str]] = {}
    for path in ledgers:
        for row in _rows(path, "SELECT fault_id, meta_json FROM study_faults WHERE study=?", (name,)):
            seen = faults.get(row["fault_id"])
            if seen is None:
                faults[row["fault_id"]] = (path, row["meta_json"])
            elif _stable(seen[1]) != _stable(row["meta_json"]):
                raise MergeError(f"fault {row['fault_id']} was built differently in {seen[0].parent} and "
                                 f"{path.parent} (its recorded metrics differ): a fault's runs must come from "
                                 f"one build; drop it from one part")

    # Jobs: a key in two parts agrees, or one of them is not done.
    jobs: dict[str, sqlite3.Row] = {}
    for path in ledgers:
        for row in _rows(path, "SELECT * FROM jobs WHERE study=?", (name,)):
            seen = jobs.get(row["key"])
            if seen is None or (seen["state"] != "done" and row["state"] == "done"):
                jobs[row["key"]] = row
            elif row["state"] == "done" and _outcome(seen) != _outcome(row):
                raise MergeError(f"job {row['key'][:12]} ({row['approach']} on {row['fault_id']}, seed {row['seed']}) "
                                 f"has different results in two parts (one is in {path.parent})")

    robustness_sets: dict[str, sqlite3.Row] = {}
    for path in ledgers:
        for row in _rows(path, "SELECT * FROM robustness_sets WHERE study=?", (name,)):
            seen = robustness_sets.get(row["fault_id"])
            if seen is not None and seen["indices_sha"] != row["indices_sha"]:
                raise MergeError(f"fault {row['fault_id']} has different robustness sets in two parts "
                                 f"(one is in {path.parent})")
            robustness_sets[row["fault_id"]] = row

    out.mkdir(parents=True, exist_ok=True)
    Ledger(target).close()  # the schemas, as a study run writes them
    StudyTables(target).close()
    db = sqlite3.connect(target, isolation_level=None)
    try:
        db.execute("BEGIN")
        _insert(db, "jobs", jobs.values())
        for path in ledgers:
            _insert(db, "approach_versions", _rows(path, "SELECT * FROM approach_versions WHERE study=?", (name,)),
                    "OR IGNORE")
            _insert(db, "study_runs", _rows(path, "SELECT * FROM study_runs WHERE study=?", (name,)))
            _insert(db, "evaluation_details", _rows(path, "SELECT * FROM evaluation_details"), "OR IGNORE")
            for row in _rows(path, "SELECT * FROM robustness_jobs WHERE study=?", (name,)):
                done = db.execute("SELECT state FROM robustness_jobs WHERE key=?", (row["key"],)).fetchone()
                if done is None or (done[0] != "done" and row["state"] == "done"):
                    _insert(db, "robustness_jobs", [row], "OR REPLACE")
        db.executemany("INSERT INTO study_faults(study, fault_id, meta_json) VALUES (?,?,?)",
                       [(name, fid, meta) for fid, (_, meta) in faults.items()])
        _insert(db, "robustness_sets", robustness_sets.values())
        # Each part's spec as last run; a part from before these were kept shows all its rows,
        # so the merge then shows all rows too.
        current: set[str] | None = set()
        for path in ledgers:
            rows = _rows(path, "SELECT keys_json FROM study_current_jobs WHERE study=?", (name,))
            if not rows:
                current = None
                break
            current |= set(json.loads(rows[0]["keys_json"]))
        if current is not None:
            db.execute("INSERT INTO study_current_jobs(study, keys_json, recorded) VALUES (?,?,strftime('%s','now'))",
                       (name, json.dumps(sorted(current))))
        db.execute("COMMIT")
    finally:
        db.close()
    logs = 0
    for part in parts:
        if (part / "jobs").is_dir():
            (out / "jobs").mkdir(exist_ok=True)
            for log in (part / "jobs").iterdir():
                if log.is_file() and not (out / "jobs" / log.name).exists():
                    shutil.copy2(log, out / "jobs" / log.name)
                    logs += 1
    return {"parts": len(parts), "faults": len(faults), "jobs": len(jobs),
            "done": sum(1 for r in jobs.values() if r["state"] == "done"), "job logs": logs}


def _insert(db: sqlite3.Connection, table: str, rows, conflict: str = "") -> None:
    rows = list(rows)
    if not rows:
        return
    columns = rows[0].keys()
    db.executemany(f"INSERT {conflict} INTO {table}({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                   [tuple(r) for r in rows])
