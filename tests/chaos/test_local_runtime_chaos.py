"""The local runtime under faults, with real service processes: an approach that exceeds
its memory limit is OOM (whether Python sees a MemoryError or native code dies of a failed
allocation), and kill -9 of the store and the evaluator in the middle of a study loses and
repeats nothing (the scaled-down, store/evaluator-only sibling of
tests/orchestrator/test_kill_resume.py, which also kills the orchestrator)."""

from __future__ import annotations

import os
import signal
import textwrap
import threading
import time

import pytest

from fixbench.artifacts.client import ArtifactClient
from fixbench.security.limits import ResourceLimits
from orchestrator import runtime_local
from orchestrator import spec as spec_module
from orchestrator.runtime_local import LocalRuntime
from tests.chaos.harness import run_jobs, study_spec, tiny_fault

# Seed 0: Python allocates past the limit (MemoryError). Seed 1: "native" code mallocs past
# the limit without checking and writes through the NULL pointer (SIGSEGV), as unchecked C
# does. Seed 14: a runaway loop (for the CPU limit). Other seeds: a well-behaved job.
APPROACH = textwrap.dedent('''
    import ctypes, sys, time
    from fixbench.sdk import Approach, Outcome, serve

    class Hog(Approach):
        name, version, level = "hog", "1.0.0", "baseline"
        needs = ()
        uses_torch = False

        def repair(self, ctx):
            if ctx.seed == 0:
                hoard = [bytearray(64 << 20) for _ in range(64)]  # 4 GiB, over any test limit
            if ctx.seed == 1:
                print("allocating 4 GiB natively", flush=True)
                libc = ctypes.CDLL(None)
                libc.malloc.restype = ctypes.c_void_p
                pointer = libc.malloc(ctypes.c_size_t(4 << 30))
                ctypes.memset(pointer or 0, 1, 4 << 30)  # NULL when over the limit: SIGSEGV
            if ctx.seed == 14:
                while True:  # a runaway loop that ignores its budget
                    pass
            time.sleep(0.4)
            return Outcome(model=ctx.model_bytes, not_repaired=True)

    if __name__ == "__main__":
        serve(Hog)
''')


@pytest.fixture
def services_dir(tmp_path, monkeypatch):
    folder = tmp_path / "services"
    (folder / "hog").mkdir(parents=True)
    (folder / "hog" / "approach.py").write_text(APPROACH)
    (folder / "hog" / "service.toml").write_text('layer = "sdk"\n')
    monkeypatch.setattr(runtime_local, "SERVICES_DIR", folder)
    monkeypatch.setattr(spec_module, "SERVICES_DIR", folder)
    return folder


def test_memory_limit_gives_oom_soft_and_hard(tmp_path, services_dir):
    spec = study_spec("hog", seeds=3, attempts=6, backoff=0.3, total=1, memory_mb=512)
    limits = {"hog": ResourceLimits(memory_mb=512)}
    with LocalRuntime(tmp_path / "run", limits=limits) as runtime:
        addresses = runtime.start({"hog": 1})
        with ArtifactClient(addresses.store, tmp_path / "cache") as client:
            fault = tiny_fault(client)
        figures = run_jobs(spec, fault, tmp_path / "ledger.sqlite", addresses.approaches["hog"][0],
                           addresses.evaluator, exit_cause=runtime.exit_cause)
        restarts = next(p.restarts for p in runtime._procs if p.name == "hog-0")
    by_seed = {r["seed"]: r for r in figures.rows}
    print(f"chaos memory limit (512 MB): jobs {figures.jobs}, statuses {figures.statuses}, service restarts "
          f"{restarts}, infra retries {figures.infra_errors}, lost {figures.lost}, duplicated {figures.duplicated}")
    assert by_seed[0]["status"] == "OOM" and "out of memory" in by_seed[0]["message"]
    assert by_seed[1]["status"] == "OOM" and "SIGSEGV" in by_seed[1]["message"] and "512 MB" in by_seed[1]["message"]
    assert by_seed[1]["attempts"] == 1  # recorded at once, not retried as an infrastructure error
    assert by_seed[2]["status"] == "NOT_REPAIRED"  # the restarted service goes on serving
    assert restarts == 1 and figures.lost == 0 and figures.duplicated == 0


@pytest.mark.slow
def test_cpu_limit_stops_a_runaway_job_as_timeout(tmp_path, services_dir):
    spec = study_spec("hog", seeds=15, attempts=3, backoff=0.3, total=1, wall_seconds=60, cpu_seconds=5)
    spec = spec.model_copy(update={"seeds": [14]})
    with LocalRuntime(tmp_path / "run", limits={"hog": ResourceLimits(cpu_seconds=5)}) as runtime:
        addresses = runtime.start({"hog": 1})
        with ArtifactClient(addresses.store, tmp_path / "cache") as client:
            fault = tiny_fault(client)
        started = time.monotonic()
        figures = run_jobs(spec, fault, tmp_path / "ledger.sqlite", addresses.approaches["hog"][0],
                           addresses.evaluator, exit_cause=runtime.exit_cause)
        elapsed = time.monotonic() - started
    row = figures.rows[0]
    print(f"chaos CPU limit (5 s): runaway job {row['status']} after {elapsed:.1f} s wall: {row['message']}")
    assert row["status"] == "TIMEOUT" and "CPU-time limit of 5 s" in row["message"] and row["attempts"] == 1
    assert elapsed < 30  # long before its 60 s budget


@pytest.mark.slow
def test_kill_9_of_store_and_evaluator_mid_study(tmp_path, services_dir):
    spec = study_spec("hog", seeds=12, attempts=8, backoff=0.3, total=2)
    kills = []
    with LocalRuntime(tmp_path / "run") as runtime:
        addresses = runtime.start({"hog": 1})
        with ArtifactClient(addresses.store, tmp_path / "cache") as client:
            fault = tiny_fault(client)
        ledger = tmp_path / "ledger.sqlite"

        def killer():
            for victim, at in (("store", 1.0), ("evaluator", 2.5), ("store", 4.0), ("evaluator", 5.5)):
                time.sleep(at - (time.monotonic() - started))
                pid = runtime.pid(victim)
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append(victim)
                except (ProcessLookupError, TypeError):
                    pass

        # seeds 0 and 1 misbehave on purpose in the other test; here every seed is well-behaved
        spec = spec.model_copy(update={"seeds": list(range(2, 14))})
        started = time.monotonic()
        thread = threading.Thread(target=killer)
        thread.start()
        figures = run_jobs(spec, fault, ledger, addresses.approaches["hog"][0], addresses.evaluator)
        thread.join()
        if figures.done < figures.jobs:  # out of retries in this run: a second run resumes
            figures = run_jobs(spec, fault, ledger, addresses.approaches["hog"][0], addresses.evaluator)
    recovered = sum(1 for r in figures.rows if r["infra_errors"] > 0 and r["state"] == "done")
    print(f"chaos kill -9 store/evaluator: jobs {figures.jobs}, kills {len(kills)} ({', '.join(kills)}), "
          f"recovered {recovered}, infra retries {figures.infra_errors}, lost {figures.lost}, "
          f"duplicated {figures.duplicated}, statuses {figures.statuses}")
    assert len(kills) == 4
    assert figures.statuses == {"NOT_REPAIRED": 12} and figures.done == 12
    assert figures.lost == 0 and figures.duplicated == 0
