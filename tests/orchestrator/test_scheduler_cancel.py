"""A Ctrl-C (the study task cancelled) while a Fix stream delivers events must end the study.

On Python 3.11 `asyncio.wait_for` returns a read that completes in the same loop iteration
as the cancellation and drops the cancellation: the study then ran on to the end and exited
0 after a Ctrl-C (seen in CI, tests/orchestrator/test_cancel.py). This pins the race down
without timing: the stream's next event and the cancellation arrive together."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from fixbench.v1 import repair_pb2
from orchestrator.scheduler import Scheduler


class OneEventCall:
    """A Fix call whose first read is a future the test completes; later reads never end."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self.first = loop.create_future()
        self.reads = 0
        self.cancelled = False

    def read(self):
        self.reads += 1
        return self.first if self.reads == 1 else self.loop.create_future()

    def cancel(self):
        self.cancelled = True


def test_a_cancellation_that_meets_a_stream_event_is_not_lost():
    async def scenario():
        loop = asyncio.get_running_loop()
        call = OneEventCall(loop)
        scheduler = Scheduler.__new__(Scheduler)
        scheduler.on_progress = lambda job, fraction, stage: None
        scheduler.job_logs = SimpleNamespace(line=lambda key, line: None)
        job = SimpleNamespace(key="k", message=repair_pb2.RepairJob(job_id="k"), approach=SimpleNamespace(concurrency=1))
        stub = SimpleNamespace(Fix=lambda request: call)
        task = asyncio.create_task(scheduler._fix(stub, job, "127.0.0.1:1"))
        await asyncio.sleep(0)  # the task now waits for the first event
        event = repair_pb2.FixResponse()
        event.progress.stage = "training"
        event.progress.fraction = 0.5
        call.first.set_result(event)
        task.cancel()  # Ctrl-C in the same iteration as the event
        try:
            async with asyncio.timeout(5):
                await task
        except asyncio.CancelledError:
            return call
        except TimeoutError:
            pytest.fail(f"the cancellation was dropped: the stream was read {call.reads} times after it")
        pytest.fail("the Fix call returned after its task was cancelled")

    call = asyncio.run(scenario())
    assert call.cancelled and call.reads == 1


def _scheduler_on(ledger) -> Scheduler:
    scheduler = Scheduler.__new__(Scheduler)
    scheduler.ledger = ledger
    return scheduler


def test_a_job_another_orchestrator_holds_is_waited_for_not_run_twice(tmp_path):
    from orchestrator.ledger import Ledger

    path = tmp_path / "ledger.sqlite"
    other = Ledger(path, owner="other-host:1:x", lease_seconds=0.4)
    other.add("done-there", "s", "noop", "1", "f", 0, {})
    other.add("lapsed", "s", "noop", "1", "f", 1, {})
    assert other.claim("done-there") is None and other.claim("lapsed") is None
    ours = _scheduler_on(Ledger(path, lease_seconds=0.4))

    async def scenario():
        waiting = asyncio.create_task(ours._claim(SimpleNamespace(key="done-there")))
        for _ in range(3):
            await asyncio.sleep(0.2)
            other.renew_claims()
        assert not waiting.done()  # a live claim: waited for
        other.finish("done-there", "REPAIRED", "", {}, {})
        assert await waiting == "done already"  # finished there: never run here
        # the other orchestrator stops renewing (it died on its host): taken over after the lease
        return await ours._claim(SimpleNamespace(key="lapsed"))

    assert asyncio.run(scenario()) is None
    assert {r["key"]: r["claimed_by"] for r in other.rows("s")}["lapsed"] == ours.ledger.owner
