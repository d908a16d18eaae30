"""The ledger records each job's outcome exactly once, across connections (processes)."""

from orchestrator.ledger import Ledger


def test_finish_once_and_resume_state(tmp_path):
    path = tmp_path / "ledger.sqlite"
    a = Ledger(path)
    a.add("k1", "s", "noop", "1", "f", 0, {})
    a.add("k1", "s", "noop", "1", "f", 0, {})  # re-adding on resume is harmless
    a.start("k1")
    b = Ledger(path)  # a second process, e.g. `fixbench study status`
    assert b.state("k1") == "running"
    assert a.finish("k1", "REPAIRED", "", {"x": 1}, {"rr": 5.0})
    assert not b.finish("k1", "REPAIRED", "", {"x": 2}, {"rr": 6.0})
    rows = list(b.rows("s"))
    assert len(rows) == 1 and rows[0]["metrics_json"] == '{"rr": 5.0}' and rows[0]["attempts"] == 1
    a.start("k1")  # a done job is never reopened
    assert b.state("k1") == "done"


def test_release_returns_to_pending(tmp_path):
    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.add("k", "s", "a", "1", "f", 0, {})
    ledger.start("k")
    ledger.release("k", "cancelled")
    assert ledger.state("k") == "pending" and ledger.counts("s") == {"pending": 1}


def _dead_pid() -> int:
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_a_job_is_claimed_by_one_orchestrator_and_left_by_another(tmp_path):
    path = tmp_path / "ledger.sqlite"
    first, second = Ledger(path), Ledger(path)
    first.add("k", "s", "noop", "1", "f", 0, {})
    assert first.claim("k") is None
    # the second orchestrator sees the live holder and leaves the job to it
    assert second.claim("k") == first.owner
    assert list(second.rows("s"))[0]["claimed_by"] == first.owner
    assert first.claim("k") is None  # the holder's own retry keeps its claim
    first.release("k", "cancelled")
    assert second.claim("k") is None and list(first.rows("s"))[0]["attempts"] == 3
    assert second.finish("k", "REPAIRED", "", {}, {})
    assert first.claim("k") == "done already"


def test_a_claim_whose_holder_is_gone_or_outlived_its_lease_is_taken_over(tmp_path):
    import socket
    import time

    path = tmp_path / "ledger.sqlite"
    gone = Ledger(path, owner=f"{socket.gethostname()}:{_dead_pid()}:old")
    gone.add("k", "s", "noop", "1", "f", 0, {})
    assert gone.claim("k") is None
    resumed = Ledger(path)
    assert resumed.claim("k") is None  # its holder's process on this host is gone
    assert list(resumed.rows("s"))[0]["claimed_by"] == resumed.owner

    elsewhere = Ledger(path, owner="other-host:1:x", lease_seconds=3600)
    elsewhere.add("j", "s", "noop", "1", "f", 1, {})
    assert elsewhere.claim("j") is None
    assert Ledger(path, lease_seconds=3600).claim("j") == "other-host:1:x"  # another host: cannot ask, lease holds
    elsewhere._db.execute("UPDATE jobs SET claimed_at=? WHERE key='j'", (time.time() - 7200,))
    assert Ledger(path, lease_seconds=3600).claim("j") is None


def test_a_ledger_written_before_claims_gains_the_columns(tmp_path):
    import sqlite3

    path = tmp_path / "ledger.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE jobs (key TEXT PRIMARY KEY, study TEXT NOT NULL, approach TEXT NOT NULL,"
               " approach_version TEXT NOT NULL, fault_id TEXT NOT NULL, seed INTEGER NOT NULL, params_json TEXT NOT NULL,"
               " state TEXT NOT NULL DEFAULT 'pending', status TEXT, message TEXT, attempts INTEGER NOT NULL DEFAULT 0,"
               " infra_errors INTEGER NOT NULL DEFAULT 0, result_json TEXT, metrics_json TEXT, created REAL NOT NULL,"
               " started REAL, finished REAL)")
    db.execute("INSERT INTO jobs(key, study, approach, approach_version, fault_id, seed, params_json, state, created)"
               " VALUES ('k', 's', 'noop', '1', 'f', 0, '{}', 'running', 0)")
    db.commit()
    db.close()
    assert Ledger(path).claim("k") is None  # an old run's 'running' row has no holder: resumable


def test_claims_are_renewed_and_lapse_without_renewal(tmp_path):
    import time

    path = tmp_path / "ledger.sqlite"
    holder = Ledger(path, owner="other-host:1:x", lease_seconds=0.5)
    holder.add("k", "s", "noop", "1", "f", 0, {})
    assert holder.claim("k") is None
    waiting = Ledger(path, lease_seconds=0.5)
    for _ in range(3):  # renewed within the lease: still the holder's
        time.sleep(0.2)
        assert holder.renew_claims() == 1
        assert waiting.claim("k") == "other-host:1:x"
    time.sleep(0.7)  # not renewed: lapsed
    assert waiting.claim("k") is None


def test_an_earlier_run_with_this_very_pid_is_not_taken_for_a_live_holder(tmp_path):
    """A restarted container's orchestrator often gets the pid its previous run had."""
    import os
    import socket

    path = tmp_path / "ledger.sqlite"
    previous = f"{socket.gethostname()}:{os.getpid()}:before-restart"
    db = Ledger(path)
    db.add("k", "s", "noop", "1", "f", 0, {})
    db._db.execute("UPDATE jobs SET state='running', claimed_by=?, claimed_at=strftime('%s','now') WHERE key='k'",
                   (previous,))
    assert db.claim("k") is None
