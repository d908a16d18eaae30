"""random-recipe (Kim et al.'s random search): the seeded trial plan, failed trials, and the
service driven through the real SDK gRPC server against an in-process artifact store on a
learning-rate fault (MLP on sklearn digits, SGD with lr = 5)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from fixbench.artifacts.client import ArtifactClient
from fixbench.artifacts.disk import DiskStore
from fixbench.artifacts.server import ArtifactsServicer
from fixbench.data import load_splits
from fixbench.grpcutil import Server, channel
from fixbench.onnxio import Predictor
from fixbench.sdk.context import RepairContext
from fixbench.sdk.server import RepairServicer
from fixbench.v1 import artifacts_pb2_grpc, repair_pb2, repair_pb2_grpc
from fixbench.zoo import Recipe, TrainingDiverged, default_recipe, train

ROOT = Path(__file__).resolve().parents[2]
SERVICE_DIR = ROOT / "services" / "random-recipe"
S = repair_pb2.RepairStatus


def _load_approach():
    # The folder name has a hyphen, so the module is loaded by path under a unique name.
    spec = importlib.util.spec_from_file_location("random_recipe_approach", SERVICE_DIR / "approach.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


approach = _load_approach()
random_search = sys.modules["random_search"]
RandomRecipe = approach.RandomRecipe


# ---- data, the faulty model and its ground-truth fix ------------------------------------
@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    return load_splits("digits", seed=0)


@pytest.fixture(scope="module")
def base() -> Recipe:
    """The ground-truth recipe (Adam, lr 1e-3) shortened so that every trial takes a blink."""
    return default_recipe("mlp").replace(epochs=10)


@pytest.fixture(scope="module")
def faulty_recipe(base) -> Recipe:
    return base.replace(optimizer="sgd", learning_rate=5.0)


@pytest.fixture(scope="module")
def faulty(digits, faulty_recipe):
    return train(
        faulty_recipe, (digits.train.x, digits.train.y), (digits.valid.x, digits.valid.y), seed=0, num_classes=10
    )


def _test_accuracy(model_bytes: bytes, digits) -> float:
    return float((Predictor(model_bytes, threads=1).predict(digits.test.x) == digits.test.y).mean())


def test_the_fault_is_real(digits, base, faulty):
    """The lr fault must ruin the model and the ground-truth recipe must fix it, else the
    repair test below would prove nothing."""
    fixed = train(base, (digits.train.x, digits.train.y), (digits.valid.x, digits.valid.y), seed=0, num_classes=10)
    assert _test_accuracy(faulty.onnx_bytes, digits) < 0.3
    assert _test_accuracy(fixed.onnx_bytes, digits) > 0.8


# ---- the seeded plan --------------------------------------------------------------------
def test_plan_is_a_function_of_the_seed(faulty_recipe):
    first = random_search.plan_trials(faulty_recipe, seed=11, n=6)
    again = random_search.plan_trials(faulty_recipe, seed=11, n=6)
    other = random_search.plan_trials(faulty_recipe, seed=12, n=6)
    assert first == again
    assert [t.recipe for t in first] != [t.recipe for t in other]
    assert [t.index for t in first] == list(range(6))
    assert all(isinstance(t.recipe, Recipe) and t.recipe.architecture == "mlp" for t in first)
    assert len({t.seed for t in first}) == 6  # every trial trains from its own seed
    assert any(t.recipe != faulty_recipe for t in first)


def test_reference_trial_leaves_the_sampled_sequence_unchanged(faulty_recipe):
    plain = random_search.plan_trials(faulty_recipe, seed=5, n=4)
    with_ref = random_search.plan_trials(faulty_recipe, seed=5, n=5, reference=True)
    assert with_ref[0].reference and with_ref[0].recipe == faulty_recipe
    assert [(t.recipe, t.seed) for t in with_ref[1:]] == [(t.recipe, t.seed) for t in plain]
    assert [t.index for t in with_ref] == list(range(5))


def test_plan_rejects_bad_arguments(faulty_recipe):
    with pytest.raises(ValueError, match="seed"):
        random_search.plan_trials(faulty_recipe, seed=-1, n=3)
    with pytest.raises(ValueError, match="n:"):
        random_search.plan_trials(faulty_recipe, seed=0, n=-2)
    with pytest.raises(TypeError, match="base"):
        random_search.plan_trials(faulty_recipe.to_dict(), seed=0, n=1)


def test_nan_rows_count_as_wrong():
    scores = np.array([[0.1, 0.9], [np.nan, 1.0], [0.8, 0.2]], np.float32)
    assert random_search.scored_accuracy(scores, np.array([1, 1, 0])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="empty"):
        random_search.scored_accuracy(np.zeros((0, 2)), np.array([], np.int64))


# ---- failed trials ----------------------------------------------------------------------
def _diverge_every_other(monkeypatch):
    """Makes every even-seeded trial diverge, as a sampled lr of 10 would on a larger model."""
    real_train = random_search.train

    def train_or_diverge(recipe, train_split, valid_split, seed, **kwargs):
        if seed % 2 == 0:
            raise TrainingDiverged("weights are not finite", history=[])
        return real_train(recipe, train_split, valid_split, seed=seed, **kwargs)

    monkeypatch.setattr(random_search, "train", train_or_diverge)


def test_diverged_trial_is_a_failed_trial(monkeypatch, digits, faulty_recipe):
    _diverge_every_other(monkeypatch)
    trial = random_search.Trial(0, faulty_recipe, seed=4)
    outcome = random_search.run_trial(
        trial, (digits.train.x, digits.train.y), (digits.valid.x, digits.valid.y), 10, None
    )
    assert outcome.failed and outcome.status == "diverged" and outcome.result is None


def _blobs_context(digits, faulty, job_kwargs, params=None):
    """A RepairContext over in-memory blobs (no server), for calling repair() directly."""
    from fixbench.arrays import npz_bytes
    from fixbench.artifacts.digest import digest_of_bytes

    blobs, refs = {}, {}
    for name, data in [("model", faulty.onnx_bytes)] + [
        (s, npz_bytes(getattr(digits, s).arrays())) for s in ("train", "valid", "repair")
    ]:
        digest = digest_of_bytes(data)
        blobs[digest.sha256] = data
        refs[name] = digest
    job = repair_pb2.RepairJob(
        job_id="direct",
        fault_family="training_recipe",
        model=refs["model"],
        data=repair_pb2.DatasetRef(
            name="digits",
            train=refs["train"],
            valid=refs["valid"],
            repair=refs["repair"],
            input_shape=[1, 8, 8],
            num_classes=10,
        ),
        **job_kwargs,
    )
    resolved = RandomRecipe.resolve_params(params or {})
    return RepairContext(job, resolved, lambda d: blobs[d.sha256], job.budget.wall_seconds or 60.0)


def test_search_survives_diverging_trials(monkeypatch, digits, faulty, faulty_recipe):
    _diverge_every_other(monkeypatch)
    ctx = _blobs_context(
        digits,
        faulty,
        dict(recipe=faulty_recipe.to_proto(), seed=3, budget=repair_pb2.Budget(wall_seconds=60, max_trials=4)),
    )
    plan = random_search.plan_trials(faulty_recipe, 3, 4)
    expected_failures = sum(t.seed % 2 == 0 for t in plan)
    assert 0 < expected_failures  # the seed is chosen so that some trials do diverge
    outcome = RandomRecipe().repair(ctx)
    assert outcome.metrics["trials"] == 4
    assert outcome.metrics["failed_trials"] == expected_failures


# ---- the service, through gRPC ----------------------------------------------------------
@pytest.fixture(scope="module")
def services(tmp_path_factory):
    root = tmp_path_factory.mktemp("random-recipe")
    store = Server(
        [lambda s: artifacts_pb2_grpc.add_ArtifactsServicer_to_server(ArtifactsServicer(DiskStore(root / "store")), s)],
        ["Artifacts"],
    )
    servicer = RepairServicer(RandomRecipe, store.address, root / "service-cache")
    repair = Server([lambda s: repair_pb2_grpc.add_RepairServicer_to_server(servicer, s)], ["Repair"])
    client = ArtifactClient(store.address, root / "client-cache")
    ch = channel(repair.address)
    yield repair_pb2_grpc.RepairStub(ch), client
    ch.close()
    client.close()
    repair.stop(0)
    store.stop(0)


@pytest.fixture(scope="module")
def uploaded(services, digits, faulty):
    from fixbench.arrays import npz_bytes

    _, client = services
    refs = {s: client.upload_bytes(npz_bytes(getattr(digits, s).arrays())) for s in ("train", "valid", "repair")}
    return client.upload_bytes(faulty.onnx_bytes), repair_pb2.DatasetRef(
        name="digits", input_shape=[1, 8, 8], num_classes=10, **refs
    )


def _job(uploaded, job_id, recipe, seed, budget, family="training_recipe", params=None, faulty_seconds=0.0):
    model, data = uploaded
    job = repair_pb2.RepairJob(
        job_id=job_id,
        fault_id="digits-mlp-hlr",
        fault_family=family,
        model=model,
        data=data,
        seed=seed,
        budget=budget,
        faulty_training_seconds=faulty_seconds,
    )
    if recipe is not None:
        job.recipe.CopyFrom(recipe.to_proto())
    if params:
        job.params.update(params)
    return job


def _fix(stub, job):
    logs, progress, result = [], [], None
    for event in stub.Fix(repair_pb2.FixRequest(job=job), timeout=120):
        kind = event.WhichOneof("event")
        if kind == "log":
            logs.append(event.log)
        elif kind == "progress":
            progress.append(event.progress)
        elif kind == "result":
            result = event.result
    assert result is not None, "the Fix stream ended without a result"
    trials = [json.loads(line[len("trial ") :]) for line in logs if line.startswith("trial ")]
    return result, trials, progress


SEED = 10
MAX_TRIALS = 6


@pytest.fixture(scope="module")
def repaired_run(services, uploaded, faulty_recipe):
    stub, _ = services
    job = _job(uploaded, "hlr-seed10", faulty_recipe, SEED, repair_pb2.Budget(wall_seconds=90, max_trials=MAX_TRIALS))
    return _fix(stub, job)


def test_random_search_repairs_a_learning_rate_fault(repaired_run, services, digits, faulty, faulty_recipe):
    result, trials, progress = repaired_run
    assert result.status == S.REPAIR_STATUS_REPAIRED, result.message
    metrics = result.metrics
    assert metrics["trials"] == MAX_TRIALS == len(trials)
    assert metrics["faulty_valid_acc"] < 0.3
    # Some sampled recipes give NaN/Inf outputs: counted as failed trials, the search goes on.
    unusable = [t for t in trials if t["valid_acc"] is None]
    assert metrics["failed_trials"] == len(unusable) >= 1
    assert all(t["status"] in ("diverged", "non-finite outputs") for t in unusable)
    assert metrics["best_valid_acc"] > metrics["faulty_valid_acc"] + 0.4
    assert progress and progress[-1].stage == "search"
    assert metrics["search_seconds"] < 90  # stopped by max_trials, well within the wall budget

    # The returned model, fetched from the store, is the one scored: much better on test data
    # that the search never saw, and it keeps the faulty model's signature.
    _, client = services
    repaired = client.fetch_bytes(result.repaired_model)
    assert _test_accuracy(repaired, digits) > _test_accuracy(faulty.onnx_bytes, digits) + 0.4
    sess_in = Predictor(repaired, threads=1).session.get_inputs()[0]
    assert sess_in.name == Predictor(faulty.onnx_bytes, threads=1).session.get_inputs()[0].name
    assert list(sess_in.shape[1:]) == [1, 8, 8]

    # The diagnosis is the diff between the faulty recipe and the winning trial's recipe.
    best = random_search.plan_trials(faulty_recipe, SEED, MAX_TRIALS)[int(metrics["best_trial"])]
    assert Recipe.from_proto(result.diagnosis.repaired_recipe) == best.recipe
    changes = {
        c.field: (json.loads(c.old_value_json), json.loads(c.new_value_json)) for c in result.diagnosis.recipe_changes
    }
    assert changes and changes == {
        f: (old, new) for f, old, new in json.loads(json.dumps(faulty_recipe.diff(best.recipe)))
    }
    assert result.diagnosis.summary


def test_the_run_follows_the_seeded_plan(repaired_run, faulty_recipe):
    _, trials, _ = repaired_run
    plan = random_search.plan_trials(faulty_recipe, SEED, MAX_TRIALS)
    assert [t["seed"] for t in trials] == [t.seed for t in plan]
    assert [t["changes"] for t in trials] == [
        json.loads(json.dumps({f: new for f, _, new in faulty_recipe.diff(t.recipe)})) for t in plan
    ]


def test_same_seed_same_trials_and_scores(repaired_run, services, uploaded, faulty_recipe):
    stub, _ = services
    again = _job(uploaded, "hlr-seed10-again", faulty_recipe, SEED, repair_pb2.Budget(wall_seconds=60, max_trials=3))
    _, trials, _ = _fix(stub, again)
    _, first, _ = repaired_run

    def key(t):
        return t["seed"], t["changes"], t["valid_acc"], t["status"]

    assert [key(t) for t in trials] == [key(t) for t in first[:3]]


def test_no_trial_beating_the_faulty_model_is_not_repaired(services, uploaded, faulty_recipe):
    stub, _ = services
    # A margin no accuracy can clear: the best trial is found but cannot count as a repair.
    job = _job(
        uploaded,
        "hlr-margin",
        faulty_recipe,
        SEED,
        repair_pb2.Budget(wall_seconds=60, max_trials=2),
        params={"min_improvement": 0.95},
    )
    result, trials, _ = _fix(stub, job)
    assert result.status == S.REPAIR_STATUS_NOT_REPAIRED
    assert "beat" in result.message and not result.repaired_model.sha256
    assert len(trials) == 2 and result.metrics["best_valid_acc"] > 0


def test_reference_trial_runs_first_and_raises_the_bar(services, uploaded, faulty_recipe):
    stub, _ = services
    job = _job(
        uploaded,
        "hlr-reference",
        faulty_recipe,
        SEED,
        repair_pb2.Budget(wall_seconds=60, max_trials=2),
        params={"reference_trial": True},
    )
    result, trials, _ = _fix(stub, job)
    assert trials[0]["reference"] and trials[0]["changes"] == {}
    assert "reference_valid_acc" in result.metrics and result.metrics["trials"] == 2
    plan = random_search.plan_trials(faulty_recipe, SEED, 1)
    assert trials[1]["seed"] == plan[0].seed  # the sampled sequence is unchanged by the reference


def test_search_stops_at_a_training_time_budget(services, uploaded, faulty_recipe):
    stub, _ = services
    # Kim et al.'s budget: k x the faulty model's training time (here 2 x 0.5 s), no trial cap.
    job = _job(
        uploaded, "hlr-budget", faulty_recipe, SEED, repair_pb2.Budget(training_time_multiple=2.0), faulty_seconds=0.5
    )
    result, trials, _ = _fix(stub, job)
    assert result.status in (S.REPAIR_STATUS_REPAIRED, S.REPAIR_STATUS_NOT_REPAIRED), result.message
    assert 1 <= len(trials) == result.metrics["trials"]
    # Each trial's deadline is capped by the budget, so the search ends soon after it.
    assert result.metrics["search_seconds"] < 1.0 + 5.0


@pytest.mark.parametrize(
    "family, recipe, needle",
    [
        ("misclassification", True, "is a misclassification fault"),
        ("training_recipe", False, "recipe"),
    ],
)
def test_check_says_why_a_job_is_unadaptable(services, uploaded, faulty_recipe, family, recipe, needle):
    stub, _ = services
    job = _job(
        uploaded,
        f"check-{family}",
        faulty_recipe if recipe else None,
        0,
        repair_pb2.Budget(wall_seconds=10),
        family=family,
    )
    reply = stub.Check(repair_pb2.CheckRequest(job=job), timeout=30)
    assert not reply.adaptable and needle in reply.reason
    result, trials, _ = _fix(stub, job)
    assert result.status == S.REPAIR_STATUS_UNADAPTABLE and needle in result.message and trials == []


def test_check_rejects_data_that_does_not_fit_the_model(services, uploaded, faulty_recipe):
    stub, _ = services
    job = _job(uploaded, "check-shape", faulty_recipe, 0, repair_pb2.Budget(wall_seconds=10))
    del job.data.input_shape[:]
    job.data.input_shape.extend([64])  # flattened digits: the faulty model takes (1, 8, 8)
    reply = stub.Check(repair_pb2.CheckRequest(job=job), timeout=30)
    assert not reply.adaptable and "[1, 8, 8]" in reply.reason and "[64]" in reply.reason


def test_check_accepts_a_recipe_fault(services, uploaded, faulty_recipe):
    stub, _ = services
    job = _job(uploaded, "check-ok", faulty_recipe, 0, repair_pb2.Budget(wall_seconds=10))
    reply = stub.Check(repair_pb2.CheckRequest(job=job), timeout=30)
    assert reply.adaptable and reply.reason == ""


def test_unknown_parameter_is_rejected(services, uploaded, faulty_recipe):
    stub, _ = services
    job = _job(uploaded, "bad-param", faulty_recipe, 0, repair_pb2.Budget(wall_seconds=10), params={"trials": 3})
    with pytest.raises(grpc.RpcError) as err:
        stub.Check(repair_pb2.CheckRequest(job=job), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "trials" in err.value.details()


def test_parameter_table_lists_every_parameter():
    table = RandomRecipe.parameter_table()
    for p in RandomRecipe.params:
        assert f"`{p.name}`" in table


def test_readme_carries_the_generated_parameter_table():
    readme = (SERVICE_DIR / "README.md").read_text(encoding="utf-8")
    assert RandomRecipe.parameter_table() in readme
