"""Pure-logic tests of stream/scheduler.py with stand-in scorers: which points each scorer scores, and how
a cadence scorer's due points become one pass."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from stream.runtime import StayRuntime
from stream.scheduler import apply_and_score, take
from stream.scoring import Needs
from tests.helpers.scheduling import EveryPoint, Hourly, _event

T0 = datetime(2150, 1, 1, tzinfo=timezone.utc)
MIN = timedelta(minutes=1)


def _stay(scorers, *points: tuple[datetime, str]) -> StayRuntime:
    rt = StayRuntime(7, 70, 0, {s.name: s.new_state() for s in scorers})
    for at, band in points:
        rt.buffer[at].append(_event(at, band))
    return rt


def test_complete_points_in_order_every_point_scored_and_the_cadence_scorer_due_once_per_hour():
    scorers = [EveryPoint(), Hourly()]
    points = [T0, T0 + 20 * MIN, T0 + 70 * MIN, T0 + 80 * MIN, T0 + 200 * MIN]
    rt = _stay(scorers, *((at, "low") for at in points))
    taken = take([rt], scorers, lambda r, at: at < T0 + 100 * MIN, batch_max=256)
    assert [s.at for s in taken.scores[7]["every"]] == points[:4]
    due = taken.due["hourly"]
    assert [p.at for _, _, p in due] == [T0, T0 + 70 * MIN]                       # first point, then the next hour
    assert [[e.event_id for e in held] for _, held, _ in due] == [["e0000"], ["e0020", "e0110"]]
    assert rt.held["hourly"] == [_event(T0 + 80 * MIN)] and list(rt.buffer) == [T0 + 200 * MIN]
    assert taken.last_point == {7: T0 + 80 * MIN} and rt.scored == T0 + 80 * MIN and rt.n_inputs == 0


def test_a_band_change_of_the_every_point_scorer_makes_the_cadence_scorer_due():
    scorers = [EveryPoint(), Hourly()]
    rt = _stay(scorers, (T0, "low"), (T0 + 5 * MIN, "low"), (T0 + 10 * MIN, "medium"))
    taken = take([rt], scorers, lambda r, at: True, batch_max=256)
    assert [p.at for _, _, p in taken.due["hourly"]] == [T0, T0 + 10 * MIN] and rt.band == "medium"


def test_a_zero_cadence_scores_every_point_in_the_batched_pass_not_on_the_event_loop():
    """MEDM2T_MEDM2T_CADENCE_MIN=0: every point is due, and all are queued for one pass (the scorer's `score`
    is never called one point at a time by `take`)."""
    class EveryPointBatched(Hourly):
        needs = Needs(lookback=None, ecgs=0, cadence=timedelta(0))

        def score(self, items):
            assert len(items) > 1, "scored point by point"
            return super().score(items)

    scorers = [EveryPointBatched()]
    rt = _stay(scorers, *((T0 + k * MIN, "low") for k in range(4)))
    taken = take([rt], scorers, lambda r, at: True, batch_max=256)
    assert [p.at for _, _, p in taken.due["hourly"]] == [T0 + k * MIN for k in range(4)]
    scores = apply_and_score(scorers[0], [(rt.states["hourly"], held, p) for _, held, p in taken.due["hourly"]])
    assert [len(s.seen) for s in scores] == [1, 2, 3, 4]


def test_a_stay_stops_once_the_pass_is_full_and_keeps_the_rest_for_the_next_batch():
    scorers = [Hourly()]
    first = _stay(scorers, *((T0 + h * 60 * MIN, "low") for h in range(5)))
    second = _stay(scorers, (T0, "low"))
    taken = take([first, second], scorers, lambda r, at: True, batch_max=3)
    assert len(taken.due["hourly"]) == 4            # the first stay stopped at 3; the second adds its point
    assert len(first.buffer) == 2


def test_several_points_of_one_stay_in_one_pass_are_each_scored_as_of_their_own_point():
    scorer = Hourly()
    state = scorer.new_state()
    p1, p2 = SimpleNamespace(at=T0), SimpleNamespace(at=T0 + 60 * MIN)
    scores = apply_and_score(scorer, [(state, [_event(T0)], p1), (state, [_event(T0 + 60 * MIN)], p2)])
    assert [s.seen for s in scores] == [["e0000"], ["e0000", "e0100"]]
    assert len(state) == 2                           # the live state holds both; the first was a snapshot
