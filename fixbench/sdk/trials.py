"""One trial engine for recipe-level approaches (Random, HEBO, BOHB): a search proposes rounds
of trials (a recipe and a training seed each), the engine runs them — in this process, or on
Ray Tune, locally or on an existing Ray cluster — within one budget shared by all trials, and
hands the results back in trial order.

    engine = TrialEngine.from_env()
    search = engine.run(proposer, recipe_trial, RecipeData(train, valid, num_classes),
                        TrialBudget(max_cost=..., deadline_wall=..., max_trials=...),
                        should_stop=ctx.should_stop, on_result=report)

Determinism. A proposer is asked for its next round only after every trial of the previous
round has finished, and every trial trains on one thread from its own seed, so the trials run,
their scores and the best trial (highest score, then lowest index) are the same for one worker
or many. The budget admits trials in index order by their planned cost, which is known before
a trial runs, so the same trials are admitted whatever the order in which they finish.

Backends (configuration only; the Repair contract does not change):
- `FIXBENCH_RAY_ADDRESS` set (e.g. "ray://head:10001" or "auto"): trials run on that Ray
  cluster through Ray Tune, `FIXBENCH_TRIAL_WORKERS` (default: the cluster's CPUs) at a time.
- else `FIXBENCH_TRIAL_WORKERS` > 1 (default: `FIXBENCH_THREADS`, else 1): a local Ray started
  inside the service, limited to that many CPUs, without dashboard or log forwarding.
- else: serial, in this process (no Ray start-up cost; the same trial function).
Also: `FIXBENCH_RAY_TMP` (folder for Ray's session files; default the system temp dir),
`FIXBENCH_RAY_STORAGE` (Tune's storage_path; a shared path or URI on a multi-node cluster),
`FIXBENCH_RAY_OBJECT_STORE_MB` (local Ray's object store, default 512). deploy/ray.md has more.
Ray is imported only when a Ray backend is used, so `fixbench` imports without it.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import queue
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

# Training seeds stay below 2**31 so that every framework accepts them.
SEED_LIMIT = 2**31 - 1
log = logging.getLogger(__name__)


# ---- what a trial is ------------------------------------------------------------------------
@dataclass(frozen=True)
class TrialSpec:
    """One planned trial. `config` is JSON-able (for recipe trials {"recipe": Recipe.to_dict()});
    `cost` is its planned cost in the budget's unit (for recipe trials: samples seen =
    epochs × training samples), known before it runs; `tag` carries the proposer's bookkeeping
    (e.g. a Hyperband bracket and rung) and is handed back untouched."""

    index: int
    config: Mapping[str, Any]
    seed: int
    cost: float = 0.0
    tag: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "config": dict(self.config), "seed": self.seed, "cost": self.cost,
                "tag": dict(self.tag)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrialSpec:
        return cls(int(data["index"]), dict(data["config"]), int(data["seed"]), float(data["cost"]),
                   dict(data.get("tag") or {}))


@dataclass
class TrialResult:
    """What one trial produced. `score` is None when the trial gave no usable model (diverged,
    non-finite outputs, cancelled). `payload` is the trained artifact where the trial ran in this
    process (for recipe trials a TrainResult); trials run on Ray return none, and the caller
    rebuilds the one it keeps with `TrialEngine.materialise`."""

    spec: TrialSpec
    score: float | None
    status: str
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    payload: Any = None

    @property
    def failed(self) -> bool:
        return self.score is None


class Proposer(Protocol):
    """A search: proposes rounds of trials and learns from their results."""

    def propose(self, next_index: int) -> Sequence[TrialSpec]:
        """The next round, numbered from `next_index` on; empty when the search is over."""

    def observe(self, results: Sequence[TrialResult]) -> None:
        """The results of the round just run (in index order; a truncated round is shorter)."""


# A trial function: (spec, data, deadline as time.time() or None, should_stop or None, report or
# None, threads) -> TrialResult. `report(fraction, message)` is per-epoch progress.
TrialFn = Callable[..., TrialResult]


@dataclass(frozen=True)
class TrialBudget:
    """Shared by all trials of a search. `max_cost`: total planned cost (e.g. k × the faulty
    recipe's samples seen); `deadline_wall`: a time.time() after which no trial starts and
    running ones stop; `trial_seconds`: cap on one trial's wall time; `max_trials`: 0 for none."""

    max_cost: float | None = None
    deadline_wall: float | None = None
    trial_seconds: float | None = None
    max_trials: int = 0

    def __post_init__(self) -> None:
        if self.max_cost is not None and not self.max_cost >= 0:
            raise ValueError(f"max_cost: expected a non-negative number or None, got {self.max_cost!r}")
        if self.trial_seconds is not None and not self.trial_seconds > 0:
            raise ValueError(f"trial_seconds: expected a positive number or None, got {self.trial_seconds!r}")
        if isinstance(self.max_trials, bool) or not isinstance(self.max_trials, int) or self.max_trials < 0:
            raise ValueError(f"max_trials: expected a non-negative integer, got {self.max_trials!r}")


@dataclass
class SearchResult:
    """Every trial run, in index order; `stop_reason` says why the search ended."""

    results: list[TrialResult]
    stop_reason: str
    spent_cost: float
    seconds: float
    backend: str

    @property
    def best(self) -> TrialResult | None:
        """The highest-scoring usable trial; ties go to the lowest index (order-independent)."""
        usable = [r for r in self.results if r.score is not None]
        return min(usable, key=lambda r: (-r.score, r.spec.index)) if usable else None


def trial_seed(search_seed: int, index: int) -> int:
    """The training seed of trial `index` of a search seeded `search_seed`: a function of the
    two alone, so the seed of a trial does not depend on what ran before or beside it."""
    sequence = np.random.SeedSequence([int(search_seed), int(index)])
    return int(sequence.generate_state(1, np.uint64)[0] % SEED_LIMIT)


# ---- recipe trials ----------------------------------------------------------------------------
@dataclass(frozen=True)
class RecipeData:
    """The data every recipe trial trains and scores on."""

    train: tuple[np.ndarray, np.ndarray]
    valid: tuple[np.ndarray, np.ndarray]
    num_classes: int | None = None


def recipe_cost(recipe, train_samples: int) -> float:
    """Samples seen by a recipe trained on `train_samples` samples: its planned cost."""
    return float(recipe.epochs) * float(train_samples)


def scored_accuracy(scores: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy where a row with any NaN/Inf score counts as wrong (argmax of NaN is meaningless)."""
    if len(labels) == 0:
        raise ValueError("labels: the validation split is empty, so no accuracy can be measured")
    if scores.ndim != 2 or len(scores) != len(labels):
        raise ValueError(f"scores: expected shape ({len(labels)}, classes), got {scores.shape}")
    finite = np.isfinite(scores).all(axis=1)
    return float(((scores.argmax(axis=1) == labels) & finite).mean())


class _StopTraining(Exception):
    pass


def recipe_trial(spec: TrialSpec, data: RecipeData, deadline_wall: float | None = None,
                 should_stop: Callable[[], bool] | None = None, report: Callable[[float, str], None] | None = None,
                 threads: int = 1, train_fn: Callable | None = None) -> TrialResult:
    """Trains `spec.config["recipe"]` from `spec.seed` on the training split and scores its ONNX
    export on validation (the artifact an approach returns). A run that diverges to non-finite
    weights, gives NaN/Inf outputs, or is stopped is a failed trial, not an error: searches
    sample many hopeless recipes. `train_fn` replaces the zoo's trainer (tests)."""
    from fixbench.onnxio import Predictor
    from fixbench.zoo import Recipe, TrainingDiverged
    from fixbench.zoo import train as zoo_train

    train_fn = zoo_train if train_fn is None else train_fn
    recipe = Recipe.from_dict(spec.config["recipe"])
    started = time.monotonic()
    deadline = None if deadline_wall is None else started + (deadline_wall - time.time())

    def on_epoch(fraction: float, record: dict) -> None:
        if report is not None:
            report(fraction, f"epoch {record.get('epoch')}: valid acc {record.get('valid_accuracy', math.nan):.4f}")
        if should_stop is not None and should_stop():
            raise _StopTraining

    try:
        result = train_fn(recipe, data.train, data.valid, seed=spec.seed, deadline=deadline,
                          num_classes=data.num_classes, threads=threads, progress=on_epoch)
    except TrainingDiverged:
        return TrialResult(spec, None, "diverged", time.monotonic() - started)
    except _StopTraining:
        return TrialResult(spec, None, "stopped", time.monotonic() - started)
    scores = Predictor(result.onnx_bytes, threads=threads).scores(data.valid[0])
    if not np.isfinite(scores).all():
        return TrialResult(spec, None, "non-finite outputs", time.monotonic() - started)
    accuracy = scored_accuracy(scores, data.valid[1])
    metrics = {"epochs_trained": float(len(result.history)), "train_seconds": float(result.train_seconds)}
    return TrialResult(spec, accuracy, result.stop_reason, time.monotonic() - started, metrics, result)


# ---- the engine ---------------------------------------------------------------------------------
class TrialEngine:
    """Runs a proposer's rounds of trials under one budget (see the module docstring)."""

    def __init__(self, workers: int = 1, address: str | None = None, tmp_dir: str | None = None,
                 storage: str | None = None, threads_per_trial: int = 1):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers: expected a positive integer, got {workers!r}")
        self.workers = workers
        self.address = address or None
        self.tmp_dir = tmp_dir
        self.storage = storage
        self.threads_per_trial = threads_per_trial

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TrialEngine:
        """The engine the service's configuration asks for (FIXBENCH_RAY_ADDRESS,
        FIXBENCH_TRIAL_WORKERS, FIXBENCH_THREADS, FIXBENCH_RAY_STORAGE, FIXBENCH_RAY_TMP)."""
        env = os.environ if environ is None else environ
        raw = env.get("FIXBENCH_TRIAL_WORKERS") or env.get("FIXBENCH_THREADS") or "1"
        try:
            workers = int(raw)
        except ValueError:
            raise ValueError(f"FIXBENCH_TRIAL_WORKERS / FIXBENCH_THREADS: expected a positive integer, got {raw!r}") from None
        return cls(max(1, workers), env.get("FIXBENCH_RAY_ADDRESS") or None, env.get("FIXBENCH_RAY_TMP") or None,
                   env.get("FIXBENCH_RAY_STORAGE") or None)

    @property
    def backend(self) -> str:
        if self.address:
            return "ray-cluster"
        return "ray-local" if self.workers > 1 else "serial"

    def describe(self) -> str:
        if self.address:
            return f"Ray Tune on the cluster at {self.address}, {self.workers} trial(s) at a time"
        if self.workers > 1:
            return f"Ray Tune on a local Ray limited to {self.workers} CPU(s)"
        return "serial, in the service process"

    # -- the search loop, common to every backend --
    def run(self, proposer: Proposer, trial_fn: TrialFn, data: Any, budget: TrialBudget,
            should_stop: Callable[[], bool] | None = None,
            on_result: Callable[[TrialResult, SearchResult], None] | None = None,
            on_epoch: Callable[[TrialSpec, float, str], None] | None = None) -> SearchResult:
        """Runs the search to its end (proposer finished, budget spent, or stopped)."""
        rounds = _Rounds(self, proposer, budget, should_stop or (lambda: False), on_result)
        started = time.monotonic()
        try:
            if self.backend == "serial":
                _run_serial(self, rounds, trial_fn, data, on_epoch)
            else:
                _run_ray(self, rounds, trial_fn, data, on_epoch)
        finally:
            rounds.search.seconds = time.monotonic() - started
        rounds.search.results.sort(key=lambda r: r.spec.index)
        return rounds.search

    @staticmethod
    def _why_stop(budget: TrialBudget, stop: Callable[[], bool]) -> str | None:
        if stop():
            return "stopped (cancelled or out of time)"
        if budget.deadline_wall is not None and time.time() >= budget.deadline_wall:
            return "wall-time budget spent"
        return None

    @staticmethod
    def _admit(specs: list[TrialSpec], budget: TrialBudget, search: SearchResult) -> tuple[list[TrialSpec], str | None]:
        """The prefix of a round the budget admits, in index order: a trial starts only if its
        whole planned cost fits, so the admitted set never depends on finishing order."""
        admitted: list[TrialSpec] = []
        for spec in specs:
            if budget.max_trials and len(search.results) + len(admitted) >= budget.max_trials:
                return admitted, "trial cap reached"
            if budget.max_cost is not None and search.spent_cost + spec.cost > budget.max_cost:
                return admitted, "cost budget spent"
            search.spent_cost += spec.cost
            admitted.append(spec)
        return admitted, None

    @staticmethod
    def _trial_deadline(budget: TrialBudget) -> float | None:
        """time.time() at which the trial starting now must stop (job deadline, per-trial cap)."""
        ends = [budget.deadline_wall] if budget.deadline_wall is not None else []
        if budget.trial_seconds is not None:
            ends.append(time.time() + budget.trial_seconds)
        return min(ends) if ends else None

    def materialise(self, trial_fn: TrialFn, data: Any, spec: TrialSpec, budget: TrialBudget | None = None) -> TrialResult:
        """Reruns one trial in this process to get its artifact (Ray trials return none); the
        trial is deterministic for its seed and thread count, so it yields the same score."""
        deadline = self._trial_deadline(budget) if budget is not None else None
        return trial_fn(spec, data, deadline, None, None, self.threads_per_trial)


class _Rounds:
    """The round bookkeeping every backend shares: asks the proposer for a round, admits its
    prefix under the budget, collects results, and hands the finished round back."""

    def __init__(self, engine: TrialEngine, proposer: Proposer, budget: TrialBudget,
                 stop: Callable[[], bool], on_result):
        self.engine, self.proposer, self.budget, self.stop = engine, proposer, budget, stop
        self.on_result = on_result
        self.search = SearchResult([], "proposer finished", 0.0, 0.0, engine.backend)
        self.next_index = 0
        self.current: list[TrialSpec] = []
        self.done: list[TrialResult] = []
        self.finished = False
        self._truncated: str | None = None
        self.propose_seconds = 0.0

    def next_round(self) -> list[TrialSpec]:
        """The admitted trials of the next round; empty once the search is over."""
        if self.finished:
            return []
        reason = self.engine._why_stop(self.budget, self.stop)
        if reason:
            return self._finish(reason)
        # A model-based proposer's step (a GP fit, an acquisition search) cannot be interrupted:
        # do not start one that the last one's duration says would not end before the deadline.
        if (self.budget.deadline_wall is not None and self.propose_seconds
                and time.time() + self.propose_seconds >= self.budget.deadline_wall):
            return self._finish("wall-time budget spent (no time for another round)")
        started = time.monotonic()
        specs = self._propose()
        if specs is None:
            return self._finish("wall-time budget spent (while the proposer was choosing the next round)")
        self.propose_seconds = time.monotonic() - started
        if not specs:
            return self._finish("proposer finished")
        expected = list(range(self.next_index, self.next_index + len(specs)))
        if [s.index for s in specs] != expected:
            raise ValueError(f"proposer: a round must number its trials {expected}, got {[s.index for s in specs]}")
        self.next_index += len(specs)
        self.current, self._truncated = self.engine._admit(specs, self.budget, self.search)
        self.done = []
        if not self.current:
            self.proposer.observe([])
            return self._finish(self._truncated or "proposer finished")
        return list(self.current)

    def _propose(self) -> list[TrialSpec] | None:
        """The proposer's next round; None when the wall deadline passed first. Under a deadline
        the proposer runs in a thread of its own that is left behind if the deadline passes
        (its result is dropped), so that the job still ends within its budget."""
        if self.budget.deadline_wall is None:
            return list(self.proposer.propose(self.next_index))
        box: dict[str, Any] = {}

        def work() -> None:
            try:
                box["specs"] = list(self.proposer.propose(self.next_index))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=work, name="trial-proposer", daemon=True)
        thread.start()
        while thread.is_alive():
            left = self.budget.deadline_wall - time.time()
            if left <= 0 or self.stop():
                return None
            thread.join(timeout=min(left, 0.5))
        if "error" in box:
            raise box["error"]
        return box["specs"]

    def record(self, result: TrialResult) -> None:
        self.done.append(result)
        self.search.results.append(result)
        if self.on_result is not None:
            self.on_result(result, self.search)

    @property
    def round_complete(self) -> bool:
        return len(self.done) >= len(self.current)

    def close_round(self) -> None:
        """Hands the finished (or stopped) round to the proposer, in index order."""
        self.proposer.observe(sorted(self.done, key=lambda r: r.spec.index))
        if self._truncated:
            self._finish(self._truncated)
        elif len(self.done) < len(self.current):
            self._finish(self.engine._why_stop(self.budget, self.stop) or "stopped")
        self.current, self.done = [], []

    def _finish(self, reason: str) -> list[TrialSpec]:
        self.finished = True
        self.search.stop_reason = reason
        return []


def _run_serial(engine: TrialEngine, rounds: _Rounds, trial_fn: TrialFn, data: Any, on_epoch) -> None:
    while True:
        specs = rounds.next_round()
        if not specs:
            return
        for spec in specs:
            if rounds.stop():
                break
            report = None if on_epoch is None else (lambda f, m, s=spec: on_epoch(s, f, m))
            rounds.record(trial_fn(spec, data, engine._trial_deadline(rounds.budget), rounds.stop, report,
                                   engine.threads_per_trial))
        rounds.close_round()


# ---- Ray Tune ---------------------------------------------------------------------------------
_RAY_LOCK = threading.Lock()
_RAY_STATE: dict[str, Any] = {}
class _RayOwner:
    """The thread that starts a local Ray's processes, alive as long as this process. Ray asks
    the kernel to kill its GCS and raylet when their parent dies (PR_SET_PDEATHSIG), and the
    kernel means the parent *thread*: started from a job's repair thread, the cluster died when
    that job ended, and the next job's driver waited 60 s for the GCS before Ray ended the
    whole service (kim2023 --threads 2: every search job after a service's first, then a
    restart). A daemon thread, not an executor's: those are joined before the atexit hooks,
    and ray.shutdown() there would then wait for a GCS already killed."""

    def __init__(self):
        self._calls: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="fixbench-ray-owner", daemon=True)
                self._thread.start()
        done: queue.Queue = queue.Queue(maxsize=1)
        self._calls.put((fn, args, done))
        ok, value = done.get()
        if not ok:
            raise value
        return value

    def _serve(self) -> None:
        while True:
            fn, args, done = self._calls.get()
            try:
                done.put((True, fn(*args)))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                done.put((False, exc))


_RAY_OWNER = _RayOwner()


def _ensure_ray(engine: TrialEngine):
    """Starts (once per process) or joins Ray; a later engine with other settings restarts it."""
    if not engine.address:
        _keep_local_ray_on_loopback()
    import ray

    key = (engine.address, engine.workers)
    with _RAY_LOCK:
        if ray.is_initialized() and _RAY_STATE.get("key") == key:
            return ray
        if ray.is_initialized():
            ray.shutdown()
        os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
        # Ray keeps Tune's own output quiet only when told before the import of ray.tune.
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
        # The raylet waits for its agents' ports; on a loaded machine they take longer to come up
        # than Ray's default allows (seen: "Timed out waiting for file .../metrics_agent_port").
        os.environ.setdefault("RAY_agent_register_timeout_ms", "120000")
        # Likewise the GCS publishes its port file only once it is up: Ray waits 30 s for it, and a
        # CI run with a test worker on each core passed that ("Timed out waiting for file
        # .../gcs_server_port_..."). 120 s is Ray's own figure for a slow GCS backend.
        os.environ.setdefault("RAY_gcs_server_port_wait_time_s", "120")
        if engine.address:
            ray.init(address=engine.address, log_to_driver=False, configure_logging=False)
            tmp_root = tempfile.mkdtemp(prefix="fixbench-tune-", dir=engine.tmp_dir)
        else:
            # Short path: Ray's unix sockets live under it and their paths are length-limited.
            tmp_root = tempfile.mkdtemp(prefix="fxray-", dir=engine.tmp_dir)
            # The object store holds only the splits (shared by every trial): a small fixed size,
            # not Ray's default of 30 % of the machine, which a container's memory limit would not fit.
            store_mb = int(os.environ.get("FIXBENCH_RAY_OBJECT_STORE_MB", "512"))
            _RAY_OWNER.call(_start_local_ray, ray, engine.workers, os.path.join(tmp_root, "ray"), store_mb)
        _RAY_STATE.update(key=key, tmp=tmp_root, runs=0)
        atexit.register(_shutdown_ray)
        return ray


# Ray replaces a loopback node address with this host's own and binds every interface, unless
# its switch for (Windows and macOS) clusters is off: then a local cluster is on 127.0.0.1 only.
_RAY_CLUSTERS_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _keep_local_ray_on_loopback() -> None:
    """A service's local Ray is reached by nothing outside the service (before: GCS, raylet and
    workers on *:port of the host's address). The variable is read when ray is imported, for
    this process and Ray's own; where ray was imported already, its constant is set too."""
    os.environ[_RAY_CLUSTERS_SWITCH] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER"):
        constants.ENABLE_RAY_CLUSTER = False


def _start_local_ray(ray, workers: int, temp_dir: str, store_mb: int, attempts: int = 3) -> None:
    """A local Ray cluster on loopback. Ray waits fixed times for its GCS and raylet to come up; on
    a busy machine (a CI run's first start) they can pass, so a start that timed out is shut down
    and tried again before the search fails."""
    for attempt in range(1, attempts + 1):
        try:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     _temp_dir=temp_dir, object_store_memory=store_mb * 1024 * 1024,
                     # Loopback (with _keep_local_ray_on_loopback): nothing listens outside it.
                     _node_ip_address="127.0.0.1")
            return
        except Exception as exc:  # noqa: BLE001 - Ray raises a bare Exception for a startup timeout
            if not _is_startup_timeout(exc) or attempt == attempts:
                raise
            log.warning("local Ray cluster did not start (attempt %d of %d): %s", attempt, attempts, exc)
            ray.shutdown()


def _is_startup_timeout(exc: Exception) -> bool:
    # Ray words them two ways: the raylet's registration and a port file that did not appear.
    text = str(exc)
    return "timed out during startup" in text or "Timed out waiting for file" in text


def _shutdown_ray() -> None:
    try:
        import ray

        if ray.is_initialized():
            ray.shutdown()
    except Exception:  # noqa: BLE001 - best effort at interpreter exit
        pass


def _trial_dirname(trial) -> str:
    # Tune's default names a trial's folder after its whole config: too long for a recipe.
    return f"trial-{trial.trial_id}"


def _ray_trainable(config, trial_fn=None, data=None, threads=1):
    """The Tune function trainable: one trial, its epochs reported as intermediate results."""
    from ray import tune

    spec = TrialSpec.from_dict(config["spec"])

    def report(fraction: float, message: str) -> None:
        tune.report({"fx_final": 0, "fx_fraction": float(fraction), "fx_message": message})

    result = trial_fn(spec, data, config["deadline_wall"], None, report, threads)
    tune.report({
        "fx_final": 1, "fx_usable": result.score is not None,
        "fx_score": float(result.score) if result.score is not None else 0.0,
        "fx_status": result.status, "fx_seconds": float(result.seconds),
        "fx_metrics": json.dumps(result.metrics),
    })


class _RayRun:
    """The live state of one Tuner.fit, kept in this process: Tune pickles its searcher,
    stopper and callbacks into the experiment's state file, and the proposer (a random
    search's trial generator, HEBO's model) cannot be pickled, so what Tune holds is only
    the run's id in _RAY_RUNS (kim2023 with --threads 2: every Random job was TOOL_ERROR
    "cannot pickle 'generator' object")."""

    def __init__(self, engine: TrialEngine, rounds: _Rounds, on_epoch):
        self.engine, self.rounds, self.on_epoch = engine, rounds, on_epoch
        self.pending: list[TrialSpec] = []
        self.by_trial: dict[str, TrialSpec] = {}
        self.errors: list[str] = []
        self.failure: list[BaseException] = []

    def halted(self) -> bool:
        budget = self.rounds.budget
        return self.rounds.stop() or (budget.deadline_wall is not None and time.time() >= budget.deadline_wall)

    def suggest(self, trial_id: str, finished: Any) -> Any:
        """Tune's next config: the current round's next admitted trial, None while the
        round's last trials run (rounds stay synchronous), `finished` at the end."""
        rounds = self.rounds
        try:
            if self.halted() or self.errors:
                return finished
            if not self.pending and rounds.current and not rounds.round_complete:
                return None
            if not self.pending:
                if rounds.current:
                    rounds.close_round()
                self.pending.extend(rounds.next_round())
                if not self.pending:
                    return finished
            spec = self.pending.pop(0)
            self.by_trial[trial_id] = spec
            return {"spec": spec.to_dict(), "deadline_wall": self.engine._trial_deadline(rounds.budget)}
        except BaseException as exc:  # noqa: BLE001 - a proposer's error ends the search, re-raised below
            self.failure.append(exc)
            return finished

    def complete(self, trial_id: str, result: Mapping[str, Any] | None, error: bool) -> None:
        spec = self.by_trial.get(trial_id)
        if spec is None:
            return
        if error or not result or not result.get("fx_final"):
            if not self.halted():
                self.errors.append(f"trial {spec.index} failed on Ray")
            return
        metrics = json.loads(result.get("fx_metrics") or "{}")
        try:
            self.rounds.record(TrialResult(spec, float(result["fx_score"]) if result["fx_usable"] else None,
                                           str(result["fx_status"]), float(result["fx_seconds"]), metrics))
        except BaseException as exc:  # noqa: BLE001 - e.g. the caller's progress hook; re-raised below
            self.failure.append(exc)

    def epoch(self, trial_id: str, result: Mapping[str, Any]) -> None:
        spec = self.by_trial.get(trial_id)
        if self.on_epoch is not None and spec is not None and not result.get("fx_final"):
            self.on_epoch(spec, float(result.get("fx_fraction", 0.0)), str(result.get("fx_message", "")))


_RAY_RUNS: dict[int, _RayRun] = {}


def _tune_hooks():
    """Tune's searcher, callback and stopper for a run in _RAY_RUNS, by its id; defined once,
    when Ray is first used (importing it costs seconds), and pickled as the id alone."""
    if "hooks" in _RAY_STATE:
        return _RAY_STATE["hooks"]
    from ray.tune import Callback, Stopper
    from ray.tune.search import Searcher

    class RoundSearcher(Searcher):
        def __init__(self, run_id: int):
            super().__init__()
            self.run_id = run_id

        def suggest(self, trial_id):
            return _RAY_RUNS[self.run_id].suggest(trial_id, Searcher.FINISHED)

        def on_trial_complete(self, trial_id, result=None, error=False):
            _RAY_RUNS[self.run_id].complete(trial_id, result, error)

        # The searcher's state is the proposer's, which lives in this process: nothing to save.
        def save(self, checkpoint_path):
            pass

        def restore(self, checkpoint_path):
            pass

    class EpochCallback(Callback):
        def __init__(self, run_id: int):
            self.run_id = run_id

        def on_trial_result(self, iteration, trials, trial, result, **info):
            _RAY_RUNS[self.run_id].epoch(trial.trial_id, result)

    class StopAll(Stopper):
        def __init__(self, run_id: int):
            self.run_id = run_id

        def __call__(self, trial_id, result):
            return False

        def stop_all(self):
            run = _RAY_RUNS[self.run_id]
            return run.halted() or bool(run.failure)

    # Module attributes, so that pickle finds each class by name and stores a reference (by
    # value, cloudpickle would take _RAY_RUNS, the live proposers, along).
    for cls in (RoundSearcher, EpochCallback, StopAll):
        name = f"_Tune{cls.__name__}"
        cls.__module__, cls.__qualname__, cls.__name__ = __name__, name, name
        globals()[name] = cls
    _RAY_STATE["hooks"] = (RoundSearcher, EpochCallback, StopAll)
    return _RAY_STATE["hooks"]


def _run_ray(engine: TrialEngine, rounds: _Rounds, trial_fn: TrialFn, data: Any, on_epoch) -> None:
    """One Tuner.fit for the whole search: a Tune Searcher hands out the admitted trials of the
    current round and suggests nothing (None) until all of them have finished, so rounds stay
    synchronous however many trials run at once."""
    _ensure_ray(engine)
    from ray import cloudpickle, tune

    module = getattr(trial_fn, "__module__", "") or ""
    if module and not module.startswith("fixbench.") and module in sys.modules:
        # A service's own helper module is not importable on Ray workers: ship it by value.
        cloudpickle.register_pickle_by_value(sys.modules[module])
    RoundSearcher, EpochCallback, StopAll = _tune_hooks()
    _RAY_STATE["runs"] += 1
    run_id = _RAY_STATE["runs"]
    run = _RAY_RUNS[run_id] = _RayRun(engine, rounds, on_epoch)
    storage = engine.storage or os.path.join(_RAY_STATE["tmp"], "tune")
    trainable = tune.with_resources(
        tune.with_parameters(_ray_trainable, trial_fn=trial_fn, data=data, threads=engine.threads_per_trial),
        {"cpu": engine.threads_per_trial},
    )
    cap = rounds.budget.max_trials or 1_000_000
    # Results come back through the searcher, not Tune's result files (their loggers are off),
    # so Tune's complaint that it cannot read those files afterwards is noise.
    analysis_log = logging.getLogger("ray.tune.analysis.experiment_analysis")
    level = analysis_log.level
    analysis_log.setLevel(logging.ERROR)
    try:
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=RoundSearcher(run_id), num_samples=cap,
                                        max_concurrent_trials=engine.workers, reuse_actors=True,
                                        trial_dirname_creator=_trial_dirname),
            run_config=tune.RunConfig(name=f"search-{run_id}", storage_path=storage, verbose=0,
                                      stop=StopAll(run_id), callbacks=[EpochCallback(run_id)],
                                      failure_config=tune.FailureConfig(max_failures=0, fail_fast=False)),
        )
        tuner.fit()
    finally:
        analysis_log.setLevel(level)
        _RAY_RUNS.pop(run_id, None)
    if run.failure:
        raise run.failure[0]
    if run.errors:
        raise RuntimeError("; ".join(run.errors) + f" (Ray's logs are under {_RAY_STATE['tmp']})")
    if rounds.current:
        rounds.close_round()
    if not rounds.finished:
        rounds._finish("stopped (cancelled or out of time)" if run.halted() else "proposer finished")


# ---- the Kim et al. space as flat points (for model-based optimisers) ----------------------
def recipe_dimensions(fidelity_epochs: bool = False) -> dict[str, Any]:
    """The Kim et al. search space (`fixbench.zoo.search_space.SEARCH_SPACE`) as fixed-length
    points for an optimiser that needs a flat space: the dimensions of SEARCH_SPACE, with the
    per-layer units as units_1..units_<max layers> (those past `layers` are ignored). With
    `fidelity_epochs` the epochs factor is left out: a multi-fidelity optimiser sets epochs."""
    from fixbench.zoo.search_space import SEARCH_SPACE

    dims = {name: dim for name, dim in SEARCH_SPACE.items() if name != "units"}
    if fidelity_epochs:
        dims.pop("epochs")
    for k in range(1, SEARCH_SPACE["layers"].high + 1):
        dims[f"units_{k}"] = SEARCH_SPACE["units"]
    return dims


def recipe_from_point(base, point: Mapping[str, Any], epochs: int | None = None):
    """The recipe a flat point stands for, around `base` (same architecture and unsearched
    fields). Epochs follow `sample_recipe`: round(base.epochs × factor), at least base.epochs + 1;
    `epochs` (a fidelity) overrides them."""
    dims = recipe_dimensions()
    missing = sorted(set(dims) - set(point) - ({"epochs"} if epochs is not None else set()))
    if missing:
        raise ValueError(f"point: missing dimension(s) {missing}")
    layers = int(point["layers"])
    if epochs is None:
        epochs = min(10000, max(base.epochs + 1, round(base.epochs * float(point["epochs"]))))
    return base.replace(
        loss=str(point["loss"]), optimizer=str(point["optimizer"]), learning_rate=float(point["learning_rate"]),
        activation=str(point["activation"]), initializer=str(point["initializer"]),
        batch_size=int(point["batch_size"]), epochs=int(epochs),
        hidden_units=tuple(int(point[f"units_{k}"]) for k in range(1, layers + 1)),
    )
