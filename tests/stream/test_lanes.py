"""Pure-logic tests of the scoring lanes (Pipeline.ready, stream/pipeline.py): a lane never takes a stay that
another lane holds, takes its share of the ready stays so that the other lane finds work, and never waits for
a partner when little is ready. (That the lanes change no score is the contract tests' part.)"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from stream.pipeline import LANES, Pipeline, lane_points
from stream.runtime import StayRuntime
from stream.scheduler import take
from tests.helpers.scheduling import Hourly, _event

T0 = datetime(2150, 1, 1, tzinfo=timezone.utc)


def _pipeline_with_ready_stays(n: int) -> Pipeline:
    pipeline = Pipeline(store=None, scorers=[], send=None)
    for sid in range(n):
        rt = StayRuntime(sid, sid, 0, {})
        rt.buffer[T0 + timedelta(minutes=sid)] = []
        pipeline.stays[sid] = rt
    pipeline.clocks.clock[0] = T0 + timedelta(days=1)  # every point is complete
    return pipeline


def _ids(stays) -> set[int]:
    return {rt.stay_id for rt in stays}


def test_each_lane_takes_its_share_and_never_a_stay_another_lane_holds():
    assert LANES == 2
    pipeline = _pipeline_with_ready_stays(8)
    first = _ids(pipeline.ready())
    assert len(first) == 4                       # half of the 8 ready stays
    pipeline.in_lanes |= first
    second = _ids(pipeline.ready())
    assert len(second) == 4 and not second & first  # the other half: 4 free and 4 held, 8 in all
    pipeline.in_lanes |= second
    assert pipeline.ready() == []                # every ready stay is held
    pipeline.in_lanes -= first                   # the first lane committed: its stays are free again
    assert _ids(pipeline.ready()) == first


def test_a_lone_ready_stay_is_taken_at_once():
    pipeline = _pipeline_with_ready_stays(1)
    assert _ids(pipeline.ready()) == {0}


def test_a_lane_takes_at_most_half_of_batch_max_stays():
    pipeline = _pipeline_with_ready_stays(10)
    pipeline.batch_max = 6
    assert len(pipeline.ready()) == 3


def test_a_pass_stays_under_batch_max_points_however_many_stays_are_ready():
    """The stay that fills a lane's pass stops there, and each stay after it adds its first due point: with at
    most half of batch_max stays in the lane, the pass never exceeds batch_max."""
    scorer, batch_max = Hourly(), 8
    pipeline = Pipeline(store=None, scorers=[scorer], send=None, batch_max=batch_max)
    for sid in range(50):
        rt = StayRuntime(sid, sid, 0, {scorer.name: []})
        for h in range(20):
            rt.buffer[T0 + timedelta(hours=h)].append(_event(T0 + timedelta(hours=h)))
        pipeline.stays[sid] = rt
    pipeline.clocks.clock[0] = T0 + timedelta(days=2)
    taken = take(pipeline.ready(), [scorer], pipeline.clocks.complete, lane_points(batch_max))
    assert lane_points(batch_max) < len(taken.due[scorer.name]) < batch_max
