"""Issue 23 item 3: a freed total slot goes to the approach with the most work left, so one
slow approach's serial chain starts early instead of finishing alone at the end."""

from __future__ import annotations

import asyncio
import math

import pytest

from orchestrator.total_slots import FLOOR_SECONDS, JobLengths, TotalSlots, WorkLeft


def test_job_lengths_recover_approach_speed_times_subject_size():
    speed = {"fast": 1.0, "slow": 8.0, "mid": 3.0}
    size = {"mnist": 1.0, "cifar": 5.0, "densenet": 40.0}
    lengths = JobLengths()
    for a, v in speed.items():
        for s, w in size.items():
            if (a, s) != ("slow", "densenet"):  # the one job not yet run
                lengths.record(a, s, v * w)
    # the fit has seen "slow" only on the small subjects and "densenet" only with the others
    assert math.isclose(lengths.estimate("slow", "densenet"), 8.0 * 40.0, rel_tol=0.02)
    assert math.isclose(lengths.estimate("fast", "mnist"), 1.0, rel_tol=0.02)


def test_one_quick_first_job_does_not_hide_a_long_chain():
    """The first subject is the small one for every approach: what matters is how the
    approach compares with the others there, scaled by what its other subjects cost them."""
    left = WorkLeft([("late", s) for s in ("mnist", "densenet", "densenet")] + [("other", "mnist")] * 3)
    left.record("first", "mnist", 2.0, "REPAIRED")
    left.record("first", "densenet", 200.0, "REPAIRED")
    left.record("late", "mnist", 1.0, "REPAIRED")
    left.record("other", "mnist", 10.0, "REPAIRED")
    # late: 1 s on MNIST (half of "first"'s), so about 100 s a DenseNet job; other: 3 x 10 s.
    assert math.isclose(left.work_left("late"), 1.0 + 2 * 100.0, rel_tol=0.02)
    assert math.isclose(left.work_left("other"), 30.0, rel_tol=0.02)
    # by the approaches' means alone, "other" (30 s) would outrank "late" (3 x 1 s)
    assert left.pick([("other", "mnist"), ("late", "densenet")]) == 1


def test_a_job_that_ended_in_check_is_not_learnt_from_and_its_approach_is_still_probed():
    """dtr-anp answers UNADAPTABLE at once on every model without BatchNorm; learning 0.5 s
    from those ranked its three long BatchNorm jobs last."""
    left = WorkLeft([("bn-only", "cnn")] * 3 + [("other", "cnn")] * 3)
    left.record("other", "cnn", 10.0, "REPAIRED")
    left.record("bn-only", "mlp", 0.01, "UNADAPTABLE")
    assert not left.lengths.known("bn-only")
    assert left.pick([("other", "cnn"), ("bn-only", "cnn")]) == 1


def test_a_quick_job_counts_as_the_floor():
    lengths = JobLengths()
    lengths.record("a", "x", 0.0)
    assert lengths.estimate("a", "x") == pytest.approx(FLOOR_SECONDS)


def test_an_approach_not_yet_probed_goes_first_then_the_most_work_left():
    left = WorkLeft([("known", "s")] * 5 + [("new", "s")] * 2 + [("small", "s")])
    left.record("known", "s", 50.0, "REPAIRED")
    left.record("small", "s", 1.0, "REPAIRED")
    waiting = [("known", "s"), ("small", "s"), ("new", "s")]
    assert left.pick(waiting) == 2  # nothing known of "new": its first job is learnt from first
    left.started("new", "s")
    assert left.pick(waiting) == 0  # its first job runs: no more priority for it
    left.stopped("new")
    left.record("new", "s", 0.5, "REPAIRED")
    assert left.pick(waiting) == 0


def test_a_freed_slot_goes_to_the_most_work_left_not_the_first_in_line():
    async def scenario():
        slots = TotalSlots(1, [("fast", "s")] * 5 + [("slow", "s")] * 3)
        slots.record("fast", "s", 1.0, "REPAIRED")
        slots.record("slow", "s", 20.0, "REPAIRED")
        await slots.acquire("fast", "s")  # the one slot is taken
        order: list[str] = []

        async def job(approach):
            await slots.acquire(approach, "s")
            order.append(approach)
            slots.release(approach)

        waiting = [asyncio.create_task(job(a)) for a in ("fast", "fast", "slow")]
        await asyncio.sleep(0)  # all three queue, the slow one last
        slots.release("fast")
        await asyncio.gather(*waiting)
        return order

    # FIFO would give fast, fast, slow; the slow approach has 3 x 20 s left against 4 x 1 s
    assert asyncio.run(scenario()) == ["slow", "fast", "fast"]


def test_ties_keep_the_order_jobs_asked_in():
    async def scenario():
        slots = TotalSlots(1, [(a, "s") for a in "abcd"])
        for a in "abcd":
            slots.record(a, "s", 1.0, "REPAIRED")  # nothing to probe: all alike
        await slots.acquire("a", "s")
        order: list[str] = []

        async def job(approach):
            await slots.acquire(approach, "s")
            order.append(approach)
            slots.release(approach)

        tasks = [asyncio.create_task(job(x)) for x in "bcd"]
        await asyncio.sleep(0)
        slots.release("a")
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["b", "c", "d"]


def test_a_cancelled_waiter_neither_keeps_nor_loses_a_slot():
    async def scenario():
        slots = TotalSlots(1, [("a", "s"), ("b", "s"), ("c", "s")])
        await slots.acquire("a", "s")
        gone = asyncio.create_task(slots.acquire("b", "s"))
        await asyncio.sleep(0)
        gone.cancel()  # cancelled while it waits ...
        slots.release("a")  # ... and the slot it would have had goes on, not lost
        with pytest.raises(asyncio.CancelledError):
            await gone
        async with asyncio.timeout(2):
            await slots.acquire("c", "s")
        # granted and cancelled in the same turn: the grant is handed back
        late = asyncio.create_task(slots.acquire("b", "s"))
        await asyncio.sleep(0)
        slots.release("c")  # grants `late` ...
        late.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await late
        async with asyncio.timeout(2):
            await slots.acquire("b", "s")
        return slots.work_left("b")

    assert asyncio.run(scenario()) == 0  # b's one job counted as started once, not twice


def test_a_retried_job_counts_as_work_left_again():
    slots = TotalSlots(1, [("a", "s"), ("a", "s")])
    asyncio.run(slots.acquire("a", "s"))
    assert slots.work_left("a") == 1.0  # nothing finished yet: every job counts 1 s
    slots.requeue("a", "s")
    assert slots.work_left("a") == 2.0


def test_no_slots_is_an_error():
    with pytest.raises(ValueError, match="at least 1"):
        TotalSlots(0, [])


def test_replayed_study_with_a_late_long_chain_ends_at_its_lower_bound():
    """benchmarks/replay_slots.py on a dtr-anp-like study: an approach whose first jobs end
    in Check and whose last three are long, beside ten approaches of quick jobs."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "replay_slots.py"
    spec = importlib.util.spec_from_file_location("replay_slots", path)
    replay_slots = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(replay_slots)
    subjects = ["s0", "s1", "s2", "s3", "s4"]
    jobs = [("chain", s, t, st) for s, t, st in zip(subjects, [0.0, 0.0, 60.0, 90.0, 140.0],
                                                    ["UNADAPTABLE"] * 2 + ["REPAIRED"] * 3, strict=True)]
    for k in range(10):
        jobs += [(f"quick{k}", s, 5.0 + k, "REPAIRED") for s in subjects]
    work = sum(t for _, _, t, _ in jobs)
    bound = max(290.0, work / 2)
    end, last = replay_slots.replay(jobs, WorkLeft, 2, 1)
    assert end <= 1.02 * bound
    before, last_before = replay_slots.replay(jobs, replay_slots.ApproachMean, 2, 1)
    assert before > 1.1 * bound and max(last_before, key=last_before.get) == "chain"
