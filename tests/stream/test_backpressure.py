"""Pure-logic test of Pipeline.room_to_buffer: a live consumer waits while too many points wait for scores
and some can be scored, and goes on once a committed batch leaves room (or nothing is scorable)."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from stream.pipeline import Pipeline
from stream.runtime import StayRuntime

T0 = datetime(2150, 1, 1, tzinfo=timezone.utc)


def _pipeline_with(points_per_stay: list[int]) -> Pipeline:
    pipeline = Pipeline(store=None, scorers=[], send=None)
    for sid, n in enumerate(points_per_stay):
        rt = StayRuntime(sid, sid, 0, {})
        for k in range(n):
            rt.buffer[T0 + timedelta(minutes=k)] = []
        pipeline.stays[sid] = rt
    pipeline.clocks.clock[0] = T0 + timedelta(days=1)  # every point is complete
    return pipeline


def test_ingest_waits_for_a_batch_while_too_many_points_wait_and_goes_on_when_there_is_room():
    async def scenario():
        pipeline = _pipeline_with([3, 3])
        waiting = asyncio.create_task(pipeline.room_to_buffer(4, recheck_s=30))
        await asyncio.sleep(0.05)
        assert not waiting.done() and pipeline._wake.is_set()       # held back, and the scoring loop is woken
        pipeline.stays[0].buffer.clear()                            # a batch scored stay 0's points ...
        pipeline._batch_done.set()                                  # ... and was committed
        await asyncio.wait_for(waiting, timeout=1)
        await asyncio.wait_for(pipeline.room_to_buffer(4), timeout=1)  # 3 points now: no wait at all

    asyncio.run(scenario())


def test_ingest_does_not_wait_when_nothing_waiting_can_be_scored():
    async def scenario():
        pipeline = _pipeline_with([3, 3])
        pipeline.clocks.clock.clear()                               # no point is complete: scoring cannot help
        await asyncio.wait_for(pipeline.room_to_buffer(1), timeout=1)

    asyncio.run(scenario())
