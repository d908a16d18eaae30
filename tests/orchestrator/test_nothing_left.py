"""Issue 23 item 2: a study with every job done is reported again without starting the
store, the evaluator or any service; the job keys come from the version each approach's
Describe answered for its service folder as it is now (recorded in the ledger)."""

import pytest

from fixbench.faults.bundle import FILES, Fault
from orchestrator import study
from orchestrator.jobs import make_job
from orchestrator.ledger import Ledger
from orchestrator.spec import StudySpec
from orchestrator.study_tables import StudyTables


def _spec(seeds=(0, 1)):
    return StudySpec.model_validate({"name": "s", "suite": "quick", "seeds": list(seeds),
                                     "approaches": [{"name": "noop"}], "budget": {"wall_seconds": 60},
                                     "evaluation": {"properties": ["accuracy"]}})


def _fault():
    digests = {name: {"sha256": f"{i:064x}", "size_bytes": 10 + i} for i, name in enumerate(FILES)}
    return Fault(id="f", family="training", dataset="mnist", architecture="lenet5", description="",
                 input_shape=[1, 28, 28], num_classes=10, seed=0, train_seconds=1.0, digests=digests)


class _NoRuntime:
    """Fails the test if the study starts anything."""

    unavailable: dict = {}

    def __enter__(self):
        raise AssertionError("the runtime was started for a study with nothing left to run")

    def __exit__(self, *exc):
        pass


def _finish_all(ledger, spec, fault, version):
    keys = []
    for seed in spec.seeds:
        job = make_job(spec.approaches[0], version, fault, seed, spec)
        ledger.add(job.key, spec.name, "noop", version, fault.id, seed, {})
        ledger.start(job.key)
        ledger.finish(job.key, "NOT_REPAIRED", "", {}, {"acc_before": 90.0, "acc_after": 90.0})
        keys.append(job.key)
    return keys


@pytest.fixture
def patched(monkeypatch, tmp_path):
    fault = _fault()
    monkeypatch.setattr(study, "select_faults", lambda spec, bench, console: [fault])
    monkeypatch.setattr(study, "make_runtime", lambda *a, **k: _NoRuntime())
    return fault


def test_a_finished_study_starts_no_service(tmp_path, patched):
    spec = _spec()
    ledger = Ledger(tmp_path / "ledger.sqlite")
    keys = _finish_all(ledger, spec, patched, "1.2.3")
    ledger.record_version("s", "noop", study.service_fingerprint("noop"), "1.2.3")
    ledger.close()
    pending = study.run_study(spec, tmp_path, bench_dir=tmp_path / "bench")
    assert pending == 0
    with StudyTables(tmp_path / "ledger.sqlite") as tables:
        assert tables.current_jobs("s") == set(keys)
    assert (tmp_path / "results.csv").read_text().count("\n") == 1 + len(keys)


@pytest.mark.parametrize("change", ["no_version", "other_fingerprint", "new_seed", "one_pending"])
def test_services_start_when_something_may_be_left(tmp_path, patched, change):
    spec = _spec()
    ledger = Ledger(tmp_path / "ledger.sqlite")
    keys = _finish_all(ledger, spec, patched, "1.2.3")
    fingerprint = study.service_fingerprint("noop")
    if change != "no_version":
        # a recorded version for another folder content says nothing about this one
        ledger.record_version("s", "noop", fingerprint if change != "other_fingerprint" else "0" * 64, "1.2.3")
    if change == "new_seed":
        spec = _spec(seeds=(0, 1, 2))
    if change == "one_pending":
        ledger.release(keys[0], "released")
        ledger._db.execute("UPDATE jobs SET state='pending' WHERE key=?", (keys[0],))
    with StudyTables(tmp_path / "ledger.sqlite") as tables:
        assert study.nothing_left(spec, [patched], ledger, tables, "local") is None
    ledger.close()
    with pytest.raises(AssertionError, match="runtime was started"):
        study.run_study(spec, tmp_path, bench_dir=tmp_path / "bench")


def test_only_the_local_runtime_takes_the_short_path(tmp_path, patched):
    spec = _spec()
    ledger = Ledger(tmp_path / "ledger.sqlite")
    keys = _finish_all(ledger, spec, patched, "1.2.3")
    ledger.record_version("s", "noop", study.service_fingerprint("noop"), "1.2.3")
    with StudyTables(tmp_path / "ledger.sqlite") as tables:
        assert study.nothing_left(spec, [patched], ledger, tables, "local") == keys
        # an image or an external service may answer another version than the folder here
        assert study.nothing_left(spec, [patched], ledger, tables, "docker") is None
        assert study.nothing_left(spec, [patched], ledger, tables, "external") is None
    ledger.close()


def test_the_fingerprint_follows_the_service_folder(tmp_path, monkeypatch):
    (tmp_path / "svc").mkdir()
    (tmp_path / "svc" / "approach.py").write_text("version = '1'\n")
    monkeypatch.setattr(study, "SERVICES_DIR", tmp_path)
    first = study.service_fingerprint("svc")
    (tmp_path / "svc" / "__pycache__").mkdir()
    (tmp_path / "svc" / "__pycache__" / "approach.cpython-311.pyc").write_bytes(b"x")
    assert study.service_fingerprint("svc") == first  # caches do not count
    (tmp_path / "svc" / "approach.py").write_text("version = '2'\n")
    assert study.service_fingerprint("svc") != first
    assert study.service_fingerprint("nosuch") is None
