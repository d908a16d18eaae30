"""Issue 18 item 4: results hold the jobs of the spec as it is now. Correcting a spec and
re-running with the same --out reported the old version's rows next to the new ones
(selected by study name); the current run's job keys now decide, in the CLI report too."""

from orchestrator.ledger import Ledger
from orchestrator.results import results_frame
from orchestrator.study_tables import StudyTables


def test_rows_of_an_earlier_spec_version_are_left_out(tmp_path):
    path = tmp_path / "ledger.sqlite"
    ledger = Ledger(path)
    # First run: a typo in the params made every job a TOOL_ERROR.
    ledger.add("old", "s", "finetune", "1", "f", 0, {"epoch": 8})
    ledger.start("old")
    ledger.finish("old", "TOOL_ERROR", "no parameter epoch", {}, {})
    # The corrected spec: other params, so another job key.
    ledger.add("new", "s", "finetune", "1", "f", 0, {"epochs": 8})
    ledger.start("new")
    ledger.finish("new", "REPAIRED", "", {}, {"acc_after": 90.0})
    with StudyTables(path) as tables:
        tables.record_current_jobs("s", ["new"])
    frame = results_frame(ledger, "s")
    assert list(frame["job_key"]) == ["new"] and list(frame["status"]) == ["REPAIRED"]
    # Explicit keys win; a ledger with no recorded run (older ones) keeps every row.
    assert list(results_frame(ledger, "s", keys=["old"])["job_key"]) == ["old"]
    with StudyTables(path) as tables:
        assert tables.current_jobs("s") == {"new"} and tables.current_jobs("other") is None
    ledger.close()
