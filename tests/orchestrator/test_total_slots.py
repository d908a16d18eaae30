"""Issue 23 item 3: a freed total slot goes to the approach with the most work left, so one
slow approach's serial chain starts early instead of finishing alone at the end."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.total_slots import UNKNOWN_JOB_SECONDS, TotalSlots


def test_work_left_is_jobs_not_started_times_the_mean_job():
    slots = TotalSlots(2, ["slow"] * 4 + ["fast"] * 6)
    assert slots.work_left("slow") == 4 * UNKNOWN_JOB_SECONDS  # nothing finished: counts rank
    slots.record("fast", 2.0)
    slots.record("fast", 4.0)
    assert slots.mean_seconds("fast") == 3.0
    assert slots.mean_seconds("slow") == 3.0  # none of its own yet: the mean over all
    slots.record("slow", 30.0)
    assert slots.work_left("slow") == 4 * 30.0 and slots.work_left("fast") == 6 * 3.0


def test_a_freed_slot_goes_to_the_most_work_left_not_the_first_in_line():
    async def scenario():
        slots = TotalSlots(1, ["fast"] * 5 + ["slow"] * 3)
        slots.record("fast", 1.0)
        slots.record("slow", 20.0)
        await slots.acquire("fast")  # the one slot is taken
        order: list[str] = []

        async def job(approach):
            await slots.acquire(approach)
            order.append(approach)
            slots.release()

        waiting = [asyncio.create_task(job(a)) for a in ("fast", "fast", "slow")]
        await asyncio.sleep(0)  # all three queue, the slow one last
        slots.release()
        await asyncio.gather(*waiting)
        return order

    # FIFO would give fast, fast, slow; the slow approach has 3 x 20 s left against 4 x 1 s
    assert asyncio.run(scenario()) == ["slow", "fast", "fast"]


def test_ties_keep_the_order_jobs_asked_in():
    async def scenario():
        slots = TotalSlots(1, ["a", "b", "c", "d"])
        await slots.acquire("a")
        order: list[str] = []

        async def job(approach):
            await slots.acquire(approach)
            order.append(approach)
            slots.release()

        tasks = [asyncio.create_task(job(x)) for x in ("b", "c", "d")]
        await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(*tasks)
        return order

    assert asyncio.run(scenario()) == ["b", "c", "d"]


def test_a_cancelled_waiter_neither_keeps_nor_loses_a_slot():
    async def scenario():
        slots = TotalSlots(1, ["a", "b", "c"])
        await slots.acquire("a")
        gone = asyncio.create_task(slots.acquire("b"))
        await asyncio.sleep(0)
        gone.cancel()  # cancelled while it waits ...
        slots.release()  # ... and the slot it would have had goes on, not lost
        with pytest.raises(asyncio.CancelledError):
            await gone
        async with asyncio.timeout(2):
            await slots.acquire("c")
        # granted and cancelled in the same turn: the grant is handed back
        late = asyncio.create_task(slots.acquire("b"))
        await asyncio.sleep(0)
        slots.release()  # grants `late` ...
        late.cancel()  # ... which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await late
        async with asyncio.timeout(2):
            await slots.acquire("b")
        return slots.work_left("b")

    assert asyncio.run(scenario()) == 0  # b's one job counted as started once, not twice


def test_a_retried_job_counts_as_work_left_again():
    slots = TotalSlots(1, ["a", "a"])
    asyncio.run(slots.acquire("a"))
    assert slots.work_left("a") == 1 * UNKNOWN_JOB_SECONDS
    slots.requeue("a")
    assert slots.work_left("a") == 2 * UNKNOWN_JOB_SECONDS


def test_no_slots_is_an_error():
    with pytest.raises(ValueError, match="at least 1"):
        TotalSlots(0, [])
