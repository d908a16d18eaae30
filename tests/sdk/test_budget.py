"""Issue 18 items 2 and 3: a machine-independent budget (training samples), shared by every
search service through fixbench.sdk.budget; and a budget that starts when the repair does,
never while the job queues behind another one."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import time
from types import SimpleNamespace

import pytest

from fixbench.sdk import server as sdk_server
from fixbench.sdk.budget import BudgetError, budget_seconds, faulty_training_samples, sample_budget, trial_seconds_cap
from fixbench.v1 import repair_pb2
from fixbench.zoo import default_recipe
from tests.sdk.test_sdk_server import NAPS, S, run_fix

# ---- item 2: the budget counts work, not seconds ------------------------------------------


def _ctx(job, train_size=None):
    split = SimpleNamespace(y=[0] * (train_size or 0))
    return SimpleNamespace(job=job, has_split=lambda name: train_size is not None, split=lambda name: split)


def test_sample_budget_comes_from_the_faulty_recipe_not_the_clock():
    recipe = default_recipe("mlp")
    job = repair_pb2.RepairJob(budget=repair_pb2.Budget(training_samples_multiple=2.5, max_trials=0),
                               faulty_training_seconds=0.469)
    job.recipe.CopyFrom(dataclasses.replace(recipe, epochs=4).to_proto())
    # Counted from the recipe and the training split when the job does not say...
    assert sample_budget(_ctx(job, train_size=100)) == 2.5 * 4 * 100
    # ...and the job's own count wins; the measured training time plays no part.
    job.faulty_training_samples = 1000
    assert sample_budget(_ctx(job, train_size=100)) == 2500
    job.faulty_training_seconds = 0.180
    assert sample_budget(_ctx(job, train_size=100)) == 2500
    # Its wall clock is only the safety cap, and no trial is cut by the clock.
    assert budget_seconds(job) == sdk_server.DEFAULT_BUDGET_SECONDS
    assert trial_seconds_cap(_ctx(job), 5.0) is None
    with pytest.raises(BudgetError, match="training samples"):
        sample_budget(_ctx(repair_pb2.RepairJob(budget=job.budget)))


def test_the_trial_engine_runs_the_same_trials_under_a_sample_budget_however_fast_training_is():
    """The sample budget drives the SDK's trial engine: which trials run is decided by their
    planned samples, so a slow machine (here: trials that sleep) runs exactly the same ones."""
    trials = pytest.importorskip("fixbench.sdk.trials")  # the engine lands with the HEBO/BOHB work
    TrialBudget, TrialEngine, TrialResult, TrialSpec = (trials.TrialBudget, trials.TrialEngine, trials.TrialResult,
                                                        trials.TrialSpec)

    job = repair_pb2.RepairJob(budget=repair_pb2.Budget(training_samples_multiple=3), faulty_training_samples=100)

    class Plan:
        def __init__(self):
            self.next = 0

        def propose(self, next_index):
            return [TrialSpec(next_index, {"k": next_index}, seed=next_index, cost=70.0)]

        def observe(self, results):
            pass

    def run(delay):
        def trial(spec, data, deadline, should_stop, report, threads):
            time.sleep(delay)
            return TrialResult(spec, float(spec.index), "completed", delay)

        budget = TrialBudget(max_cost=sample_budget(_ctx(job)), trial_seconds=trial_seconds_cap(_ctx(job), 5.0))
        search = TrialEngine(workers=1).run(Plan(), trial, None, budget)
        return [r.spec.index for r in search.results]

    assert run(0.0) == run(0.05) == [0, 1, 2, 3]  # 4 × 70 samples fit in 300, a fifth does not


def test_wall_and_training_time_budgets_keep_their_meaning():
    assert budget_seconds(repair_pb2.RepairJob(budget=repair_pb2.Budget(wall_seconds=6))) == 6
    job = repair_pb2.RepairJob(budget=repair_pb2.Budget(training_time_multiple=10), faulty_training_seconds=0.5)
    assert budget_seconds(job) == 5
    assert sample_budget(_ctx(job)) is None and trial_seconds_cap(_ctx(job), 2.0) == 1.0
    with pytest.raises(BudgetError):
        budget_seconds(repair_pb2.RepairJob(budget=repair_pb2.Budget(training_time_multiple=10)))
    assert faulty_training_samples(repair_pb2.RepairJob()) == 0


def test_the_job_key_holds_whatever_sets_the_budget(tmp_path):
    from fixbench.faults.bundle import Fault
    from orchestrator.jobs import job_key, make_job
    from orchestrator.spec import StudySpec

    def fault(seconds):
        return Fault(id="f", family="training_recipe", dataset="digits", architecture="mlp", description="",
                     input_shape=[1, 8, 8], num_classes=10, seed=0, train_seconds=seconds,
                     recipe=dataclasses.replace(default_recipe("mlp"), epochs=4).to_dict(),
                     metrics={"train_size": 500.0},
                     digests={n: {"sha256": n[0] * 64, "size_bytes": 1} for n in ("model", "train", "valid", "repair", "test")})

    def spec(budget):
        return StudySpec.model_validate({"name": "s", "suite": "quick", "seeds": [0], "budget": budget,
                                         "approaches": [{"name": "noop"}]})

    by_time = spec({"training_time_multiple": 10})
    assert job_key("noop", "1", fault(0.469), {}, 0, by_time) != job_key("noop", "1", fault(0.180), {}, 0, by_time)
    by_samples = spec({"training_samples_multiple": 10})
    assert job_key("noop", "1", fault(0.469), {}, 0, by_samples) == job_key("noop", "1", fault(0.180), {}, 0, by_samples)
    assert job_key("noop", "1", fault(0.469), {}, 0, by_samples) != job_key("noop", "1", fault(0.469), {}, 0,
                                                                             spec({"training_samples_multiple": 20}))
    job = make_job(by_samples.approaches[0], "1", fault(0.2), 0, by_samples)
    assert job.message.budget.training_samples_multiple == 10 and job.message.faulty_training_samples == 2000
    # Existing wall-clock specs keep their job keys (a resumed study finds its done jobs).
    wall = spec({"wall_seconds": 60})
    assert "training_samples_multiple" not in wall.budget.model_dump(exclude_none=True)


# ---- item 3: queueing is not budget --------------------------------------------------------


def test_queued_jobs_never_time_out_before_they_start(served, monkeypatch):
    """Four jobs on one service that runs one repair at a time, each with a 0.7 s budget and
    0.4 s of work: the last waits 1.2 s for its turn, which used to be a TIMEOUT."""
    monkeypatch.setattr(sdk_server, "BUDGET_GRACE_SECONDS", 0.2)
    from fixbench.grpcutil import channel
    from fixbench.v1 import repair_pb2_grpc

    address, job = served
    ch = channel(address)
    stub = repair_pb2_grpc.RepairStub(ch)
    NAPS.clear()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda i: run_fix(stub, job(f"queued-{i}", 0.7)), range(4)))
    ch.close()
    assert [r.status for _, r in runs] == [S.REPAIR_STATUS_REPAIRED] * 4, [r.message for _, r in runs]
    for events, result in runs:
        started = [e.progress for e in events if e.WhichOneof("event") == "progress" and e.progress.stage == "started"]
        assert len(started) == 1 and started[0].metrics["budget_seconds"] == pytest.approx(0.7)
        assert result.timings.repair_seconds >= 0.4


@pytest.fixture
def served(store, tmp_path):
    """The Echo approach behind a real server: (address, job factory)."""
    import numpy as np
    from google.protobuf import struct_pb2

    from fixbench.arrays import npz_bytes
    from fixbench.grpcutil import Server
    from fixbench.v1 import repair_pb2_grpc
    from tests.conftest import blob_dataset, dense_classifier
    from tests.sdk.test_sdk_server import Echo

    store_server, _, client = store
    w = np.zeros((4, 3), np.float32)
    w[0, 0] = w[1, 1] = w[2, 2] = 1.0
    w[3, 0] = 2.0
    faulty = client.upload_bytes(dense_classifier(w, np.zeros(3, np.float32)).SerializeToString())
    x, y = blob_dataset(0)
    x[:, 3] = np.abs(x[:, 3]) * 2
    split = client.upload_bytes(npz_bytes({"x": x, "y": y}))
    servicer = sdk_server.RepairServicer(Echo, store_server.address, str(tmp_path / "svc-cache"))
    server = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])

    def job(job_id, budget):
        p = struct_pb2.Struct()
        p.update({"mode": "nap"})
        return repair_pb2.RepairJob(job_id=job_id, model=faulty, params=p, seed=1, budget=repair_pb2.Budget(wall_seconds=budget),
                                    data=repair_pb2.DatasetRef(repair=split, valid=split, input_shape=[4], num_classes=3))

    yield server.address, job
    server.stop(0)


def test_the_orchestrator_deadline_counts_from_the_repair_start(served, monkeypatch):
    """The orchestrator's stream deadline is budget + margin from the "started" event, not from
    the call: four queued jobs whose queue time exceeds budget + margin all finish."""
    import asyncio

    from fixbench.grpcutil import aio_channel
    from fixbench.v1 import repair_pb2_grpc
    from orchestrator import scheduler as sched

    monkeypatch.setattr(sched, "STREAM_MARGIN_SECONDS", 0.3)
    monkeypatch.setattr(sdk_server, "BUDGET_GRACE_SECONDS", 0.2)
    address, job = served
    NAPS.clear()

    async def main():
        s = sched.Scheduler.__new__(sched.Scheduler)
        s.on_progress = lambda *a: None
        # The SDK's upload notice is a log line: kept, and no evaluation started from it here.
        s.job_logs = SimpleNamespace(line=lambda key, line: None)
        s.early_evaluation, s._early = False, {}
        ch = aio_channel(address)
        stub = repair_pb2_grpc.RepairStub(ch)
        try:
            return await asyncio.gather(*(
                s._fix(stub, SimpleNamespace(key=f"orch-{i}", message=job(f"orch-{i}", 0.5),
                                             approach=SimpleNamespace(concurrency=4)),
                       address) for i in range(4)))
        finally:
            await ch.close()

    results = asyncio.run(main())
    assert [r.status for r in results] == [S.REPAIR_STATUS_REPAIRED] * 4, [r.message for r in results]
