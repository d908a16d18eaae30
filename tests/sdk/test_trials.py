"""The trial engine (fixbench.sdk.trials): budget admission by planned cost in index order,
synchronous rounds, the best by (score, index), stopping; Ray is not imported by fixbench; and
one Ray test: a 2-worker local Ray runs the same trials, with the same scores and the same best
recipe, as a serial run for the same seed, and a stop ends every running trial."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from fixbench.sdk.trials import (
    RecipeData,
    TrialBudget,
    TrialEngine,
    TrialResult,
    TrialSpec,
    recipe_cost,
    recipe_trial,
    trial_seed,
)


class Plan:
    """A proposer of fixed rounds; records what it observed."""

    def __init__(self, rounds):
        self.rounds, self.observed = list(rounds), []

    def propose(self, next_index):
        if not self.rounds:
            return []
        return [TrialSpec(next_index + k, {"value": v}, trial_seed(0, next_index + k), cost=c)
                for k, (v, c) in enumerate(self.rounds.pop(0))]

    def observe(self, results):
        self.observed.append([r.spec.index for r in results])


def scored(spec, data, deadline_wall=None, should_stop=None, report=None, threads=1):
    value = spec.config["value"]
    if report is not None:
        report(1.0, "done")
    return TrialResult(spec, None if value is None else float(value), "ok" if value is not None else "diverged", 0.0)


def test_budget_admits_whole_trials_in_index_order():
    plan = Plan([[(0.1, 3), (0.5, 3)], [(0.2, 5), (0.9, 1)]])
    search = TrialEngine().run(plan, scored, None, TrialBudget(max_cost=7))
    # 3 + 3 fit; the 5-sample trial does not, so the search ends there, though a later one would fit.
    assert [r.spec.index for r in search.results] == [0, 1]
    assert search.stop_reason == "cost budget spent" and search.spent_cost == 6
    assert plan.observed == [[0, 1], []]


def test_trial_cap_and_the_best_by_score_then_index():
    plan = Plan([[(0.5, 1), (None, 1), (0.5, 1)], [(0.4, 1)]])
    search = TrialEngine().run(plan, scored, None, TrialBudget(max_trials=3))
    assert len(search.results) == 3 and search.stop_reason == "trial cap reached"
    assert search.best.spec.index == 0  # a tie goes to the lowest index, whatever finished first
    assert search.results[1].failed


def test_a_stop_ends_the_search_between_trials():
    seen = []
    plan = Plan([[(0.1, 1)] * 5])
    search = TrialEngine().run(plan, scored, None, TrialBudget(), should_stop=lambda: len(seen) >= 2,
                               on_result=lambda r, s: seen.append(r.spec.index))
    assert seen == [0, 1] and search.stop_reason.startswith("stopped")


def test_proposer_must_number_its_trials():
    class Bad(Plan):
        def propose(self, next_index):
            return [TrialSpec(next_index + 1, {"value": 1.0}, 0)]

    with pytest.raises(ValueError, match="number its trials"):
        TrialEngine().run(Bad([]), scored, None, TrialBudget())


def test_configuration_picks_the_backend():
    assert TrialEngine.from_env({}).backend == "serial"
    assert TrialEngine.from_env({"FIXBENCH_THREADS": "2"}).backend == "ray-local"
    engine = TrialEngine.from_env({"FIXBENCH_TRIAL_WORKERS": "1", "FIXBENCH_RAY_ADDRESS": "ray://head:10001"})
    assert engine.backend == "ray-cluster" and "head:10001" in engine.describe()
    with pytest.raises(ValueError, match="positive integer"):
        TrialEngine.from_env({"FIXBENCH_TRIAL_WORKERS": "two"})
    with pytest.raises(ValueError, match="max_cost"):
        TrialBudget(max_cost=-1)


def test_fixbench_does_not_import_ray():
    code = "import sys, fixbench.sdk, fixbench.sdk.trials, fixbench.sdk.recipe_search; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_trial_seeds_depend_on_seed_and_index_only():
    assert trial_seed(3, 7) == trial_seed(3, 7)
    assert len({trial_seed(3, i) for i in range(50)}) == 50 and trial_seed(4, 7) != trial_seed(3, 7)


# ---- Ray -------------------------------------------------------------------------------------
class RandomRecipes:
    """Random recipes in rounds of two (a recipe search in miniature), each trained 2 epochs."""

    def __init__(self, base, seed, train_samples):
        self.base, self.rng, self.seed, self.n = base, np.random.default_rng(seed), seed, train_samples

    def propose(self, next_index):
        from fixbench.sdk.recipes import sample_recipe

        specs = []
        for k in range(2):
            recipe = sample_recipe(self.base, self.rng).replace(epochs=2)
            specs.append(TrialSpec(next_index + k, {"recipe": recipe.to_dict()}, trial_seed(self.seed, next_index + k),
                                   recipe_cost(recipe, self.n)))
        return specs

    def observe(self, results):
        pass


def slow_trial(spec, data, deadline_wall=None, should_stop=None, report=None, threads=1):
    # Stands for a long training: sleeps until the deadline or 60 s.
    end = time.time() + 60 if deadline_wall is None else min(deadline_wall, time.time() + 60)
    while time.time() < end:
        time.sleep(0.05)
    return TrialResult(spec, 0.5, "completed", 60.0)


@pytest.mark.slow  # Ray starts a local cluster (seconds of several processes)
def test_two_ray_workers_give_the_serial_search():
    pytest.importorskip("ray", reason="ray[tune] (tests/requirements-services.txt)")
    from fixbench.data import load_splits
    from fixbench.zoo import default_recipe

    digits = load_splits("digits", seed=0)
    data = RecipeData((digits.train.x, digits.train.y), (digits.valid.x, digits.valid.y), 10)
    base = default_recipe("mlp").replace(epochs=2, optimizer="sgd", learning_rate=5.0)
    budget = TrialBudget(max_trials=4)

    def search(workers):
        epochs = []
        proposer = RandomRecipes(base, 11, len(digits.train.y))
        # The services' proposers hold what cannot be pickled (random-recipe a generator of
        # trials): Tune must never be handed them (kim2023 --threads 2 was TOOL_ERROR on it).
        proposer.unpicklable = (i for i in range(3))
        result = TrialEngine(workers=workers).run(proposer, recipe_trial, data,
                                                  budget, on_epoch=lambda s, f, m: epochs.append(s.index))
        return result, epochs

    serial, serial_epochs = search(1)
    parallel, parallel_epochs = search(2)
    assert parallel.backend == "ray-local" and serial.backend == "serial"
    # The service's local Ray is on loopback only (Ray 2.60 put it on the host's address, on
    # every interface, though asked for 127.0.0.1), although ray was imported above already.
    import ray

    assert ray.util.get_node_ip_address() == "127.0.0.1"
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")

    def key(r):
        return r.spec.index, r.spec.config["recipe"], r.spec.seed, r.score, r.status

    assert [key(r) for r in parallel.results] == [key(r) for r in serial.results]
    assert len(parallel.results) == 4 and parallel.best.spec.index == serial.best.spec.index
    assert sorted(parallel_epochs) == sorted(serial_epochs)  # every trial reported its epochs
    # The winner rebuilt in the service process is the model that was scored.
    rebuilt = TrialEngine(workers=2).materialise(recipe_trial, data, parallel.best.spec)
    assert rebuilt.score == parallel.best.score and rebuilt.payload is not None

    # A stop ends the running trials too, not only the search: both 60 s trials end early.
    started = time.monotonic()
    stop_at = time.time() + 3.0
    stopped = TrialEngine(workers=2).run(RandomRecipes(base, 1, 10), slow_trial, None, TrialBudget(),
                                         should_stop=lambda: time.time() > stop_at)
    assert time.monotonic() - started < 45 and stopped.stop_reason.startswith("stopped")
    assert stopped.results == []


# Two jobs of one service, each search in a thread of its own that ends with the job (the
# SDK runs every repair in its own thread). In a subprocess: on the failure Ray ends the process.
TWO_JOBS = """
import sys, threading, time
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/tests/sdk"]
from test_trials import RandomRecipes, slow_trial
from fixbench.sdk.trials import TrialBudget, TrialEngine
from fixbench.zoo import default_recipe

def job(name):
    stop_at = time.time() + 2.0
    result = TrialEngine(workers=2).run(RandomRecipes(default_recipe("mlp"), 1, 10), slow_trial, None, TrialBudget(),
                                        should_stop=lambda: time.time() > stop_at)
    print(name, result.backend, result.stop_reason, flush=True)

for name in ("first", "second"):
    thread = threading.Thread(target=job, args=(name,))
    thread.start()
    thread.join()
    time.sleep(3)  # the first job's thread is gone: a cluster tied to it would die now
"""


@pytest.mark.slow  # two searches on a local Ray, in a subprocess
def test_a_local_ray_outlives_the_job_thread_that_started_it():
    pytest.importorskip("ray", reason="ray[tune] (tests/requirements-services.txt)")
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", TWO_JOBS, str(root)], cwd=root, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(("first", "second"))]
    assert proc.returncode == 0 and len(lines) == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert all(" ray-local stopped" in line for line in lines), lines


def test_no_round_is_proposed_that_cannot_end_before_the_deadline():
    class Slow(Plan):
        def propose(self, next_index):
            time.sleep(0.3)  # stands for a GP fit that cannot be interrupted
            return super().propose(next_index)

    plan = Slow([[(0.1, 1)], [(0.2, 1)], [(0.3, 1)]])
    search = TrialEngine().run(plan, scored, None, TrialBudget(deadline_wall=time.time() + 0.5))
    assert [r.spec.index for r in search.results] == [0]
    assert "no time for another round" in search.stop_reason


def test_a_proposer_still_thinking_at_the_deadline_is_left_behind():
    class Stuck(Plan):
        def propose(self, next_index):
            if next_index > 0:
                time.sleep(5)  # an acquisition search that outlives the budget
            return super().propose(next_index)

    started = time.monotonic()
    plan = Stuck([[(0.1, 1)], [(0.2, 1)]])
    search = TrialEngine().run(plan, scored, None, TrialBudget(deadline_wall=time.time() + 1.0))
    assert time.monotonic() - started < 3 and [r.spec.index for r in search.results] == [0]
    assert "while the proposer was choosing" in search.stop_reason


class FlakyRay:
    """Stands in for the ray module: its first `fail` starts raise `error`, then it starts."""

    def __init__(self, error, fail=1):
        self.error, self.fail, self.inits, self.shutdowns = error, fail, 0, 0

    def init(self, **kwargs):
        self.inits += 1
        if self.inits <= self.fail:
            raise self.error

    def shutdown(self):
        self.shutdowns += 1


@pytest.mark.parametrize("message", [
    "The current node timed out during startup. This could happen because ...",
    "Timed out waiting for file /tmp/fxray-x/ray/session_x/gcs_server_port_abc",
])
def test_a_local_ray_start_that_timed_out_is_tried_again(message):
    from fixbench.sdk.trials import _start_local_ray

    ray = FlakyRay(RuntimeError(message))
    _start_local_ray(ray, 2, "/tmp/unused", 64)
    assert (ray.inits, ray.shutdowns) == (2, 1)


def test_a_local_ray_start_that_failed_otherwise_is_not_retried():
    from fixbench.sdk.trials import _start_local_ray

    ray = FlakyRay(RuntimeError("object_store_memory is too large"))
    with pytest.raises(RuntimeError, match="too large"):
        _start_local_ray(ray, 2, "/tmp/unused", 64)
    assert ray.inits == 1


def test_a_start_that_keeps_timing_out_fails_after_its_attempts():
    from fixbench.sdk.trials import _start_local_ray

    ray = FlakyRay(RuntimeError("Timed out waiting for file x"), fail=5)
    with pytest.raises(RuntimeError, match="Timed out"):
        _start_local_ray(ray, 2, "/tmp/unused", 64, attempts=3)
    assert ray.inits == 3
