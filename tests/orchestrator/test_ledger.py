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
