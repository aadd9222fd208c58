"""Where events land in clinical time (docs/scoring-contract.md, Points): observation sets and single events
give the same points, a bad member of a set goes alone, and a quiet flush moves on only the stays whose
point it completed. An in-process pipeline on the session Redis (no Kafka)."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from medm2t import topics
from medm2t.events import DeadLetter, Measurement, StaticFeatures, StayOpened, dump_event, set_messages
from stream import keys
from stream.state import from_epoch

T = datetime(2150, 1, 1, 8, 0)
DB = 12


def _hr(sid: int, n: int, at: datetime, value: float = 80) -> Measurement:
    return Measurement(event_id=f"{sid}-hr-{n}", stay_id=sid, subject_id=100 + sid, time=at, available_time=at,
                       source="test", item="hr", category="vital", concept="hr", value=value)


def _opened(sid: int) -> StayOpened:
    return StayOpened(event_id=f"o{sid}", stay_id=sid, subject_id=100 + sid, time=T, available_time=T, source="test",
                      static=StaticFeatures())


def _run(settings, steps, spy=None) -> tuple[dict, dict[int, list[datetime]]]:
    """Feed each step's messages ((key, value) pairs) as one chunk on partition 0, scoring what is ready
    after it; a step "flush" lets the partition go quiet (every point up to its clock completes). Returns
    what was published per topic and each stay's stored events' effective times. `spy(pipeline, redis)`
    may watch the pipeline from its Redis client."""
    from medm2t.connections import redis_async, redis_sync
    from stream.offline import MemorySink, score_all_ready
    from stream.pipeline import Pipeline
    from stream.runtime import Message
    from stream.scorers.news2 import News2Scorer
    from stream.state import StayStore

    db = settings.model_copy(update={"redis_url": settings.redis_url.rsplit("/", 1)[0] + f"/{DB}"})
    redis_sync(db).flushdb()
    sink = MemorySink()

    async def main():
        redis = redis_async(db)
        try:
            scorer = News2Scorer()
            pipeline = Pipeline(StayStore(redis, [scorer.needs]), [scorer], sink.send, idle_ms=10**9)
            await pipeline.assign({0})
            if spy is not None:
                spy(pipeline, redis)
            offset = 0
            for step in steps:
                if step == "flush":
                    pipeline.clocks.idle_s = 0.0
                    await score_all_ready(pipeline)
                    pipeline.clocks.idle_s = 10**6
                    continue
                await pipeline.ingest([Message(topics.EVENTS, 0, offset + i, k, v) for i, (k, v) in enumerate(step)])
                offset += len(step)
                await score_all_ready(pipeline)
        finally:
            await redis.aclose()

    asyncio.run(main())
    r = redis_sync(db)
    at = {sid: sorted(from_epoch(s) for _, s in r.zrange(keys.events(sid), 0, -1, withscores=True)) for sid in (1, 2, 3)}
    return sink.sent, at


def _single(e) -> tuple[bytes, bytes]:
    return str(e.stay_id).encode(), dump_event(e)


def _sets(events) -> list[tuple[bytes, bytes]]:
    return [(str(events[0].stay_id).encode(), v) for v, _ in set_messages(events)]


@pytest.mark.integration
def test_a_quiet_flush_moves_on_only_the_stays_whose_point_it_completed(pipeline_settings):
    """Stay 1's point at T is completed by a quiet flush; then stay 1 and stay 2 each get an event at T. Stay
    1's goes a millisecond after its complete point; stay 2 had no point at T, so its event stays at T (a
    flush used to move every later event of the partition, whichever stay it belonged to)."""
    first = [_single(_hr(2, 1, T - timedelta(hours=1))), _single(_hr(1, 1, T))]
    sent, at = _run(pipeline_settings, [first, "flush", [_single(_hr(1, 2, T)), _single(_hr(2, 2, T))], "flush"])
    assert at[1] == [T, T + timedelta(milliseconds=1)]
    assert at[2] == [T - timedelta(hours=1), T]
    assert not sent[topics.DEADLETTER]


@pytest.mark.integration
def test_a_burst_cut_by_a_pause_after_a_quiet_flush_stays_one_point(pipeline_settings):
    """A flush at T completed stay 1's point. Stay 2's two events at T then arrive in two chunks (a v1
    producer's singles, a pause between them): they make one point at T, scored once, not two."""
    steps = [[_single(_hr(1, 1, T))], "flush", [_single(_hr(2, 1, T))], [_single(_hr(2, 2, T, 95))], "flush"]
    sent, at = _run(pipeline_settings, steps)
    assert at[2] == [T, T]
    assert len(sent[topics.SCORES]) == 2  # stay 1 at T, stay 2 at T


@pytest.mark.integration
def test_observation_sets_give_the_points_and_scores_of_single_events(pipeline_settings):
    """The same events as one message per event, and as sets per stay and time, with singles mixed in."""
    events = [_hr(1, 1, T), _hr(1, 2, T, 95), _hr(2, 1, T, 120), _hr(1, 3, T + timedelta(minutes=5), 130),
              _hr(2, 2, T + timedelta(minutes=5), 45), _hr(2, 3, T + timedelta(minutes=5), 50)]
    singles, single_at = _run(pipeline_settings, [[_single(e) for e in events], "flush"])
    mixed = _sets(events[:2]) + [_single(events[2])] + _sets(events[3:4]) + _sets(events[4:])
    assert len(mixed) == 4
    bundled, bundled_at = _run(pipeline_settings, [mixed, "flush"])
    assert bundled_at == single_at
    assert sorted(bundled[topics.SCORES]) == sorted(singles[topics.SCORES]) and len(singles[topics.SCORES]) == 4


@pytest.mark.integration
def test_a_bad_member_of_a_set_is_dead_lettered_alone_with_its_index(pipeline_settings):
    good = [_hr(1, 1, T), _hr(1, 3, T, 90)]
    value, _ = set_messages([good[0], _hr(1, 2, T), good[1]])[0]
    bad = value.replace(b'"event_id":"1-hr-2","stay_id":1', b'"event_id":"1-hr-2","stay_id":2')
    assert bad != value
    sent, at = _run(pipeline_settings, [[(b"1", bad)], "flush"])
    letters = [DeadLetter.model_validate_json(v) for v in sent[topics.DEADLETTER]]
    assert [d.reason for d in letters] == ["observation set member 1: its stay_id is not the set's"]
    assert (letters[0].partition, letters[0].offset) == (0, 0)
    assert at[1] == [T, T]  # both siblings applied
    assert len(sent[topics.SCORES]) == 1


@pytest.mark.integration
@pytest.mark.parametrize("value, reason", [
    (b'{"kind":"observation_set","stay_id":1,"events":[]}', "events must be a list of 1 to"),
    (b'{"kind":"observation_set","stay_id":1,"events":[{}],"extra":1}', "unknown field 'extra'"),
    (b'{"kind":"observation_set","stay_id":"1","events":[{}]}', "stay_id must be an integer from 1 to"),
    (b'{"kind":"observation_set","stay_id":1,"events":' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested too deeply"),
    (b'{"kind":"observation_set","stay_id":1,"events":[{"event_id":"\\ud800"}]}', "member 0: not valid UTF-8"),
    (b'{"kind":"observation_set","stay_id":2,"events":[{}]}', "message key must be the observation set's stay_id"),
    (b'{"kind":"observation_set","stay_id":1,"events":[NaN]}', "not valid JSON"),
])
def test_a_bad_set_is_dead_lettered_whole(pipeline_settings, value, reason):
    sent, at = _run(pipeline_settings, [[(b"1", value)]])
    letters = [DeadLetter.model_validate_json(v) for v in sent[topics.DEADLETTER]]
    assert len(letters) == 1 and reason in letters[0].reason, letters
    assert at[1] == []


@pytest.mark.integration
def test_the_partition_clock_never_runs_ahead_of_the_buffered_events(pipeline_settings):
    """While a chunk's APPLY is in flight the partition clock has not moved to the chunk's times. The publish
    path fires alert timers outside the state lock: a clock ahead of the buffers fired a stay's escalation at
    its deadline although the stay's own point at that very time was in the chunk (seen after a Redis restart
    mid-replay, which made the window seconds long)."""
    later = T + timedelta(minutes=10)
    seen: list[tuple[datetime | None, bool]] = []

    def spy(pipeline, redis):
        real = redis.pipeline

        def watched(*args, **kwargs):
            pipe = real(*args, **kwargs)
            execute = pipe.execute

            async def execute_and_look(*a, **kw):
                rt = pipeline.stays.get(1)
                has_later = rt is not None and (later in rt.buffer or (rt.scored is not None and rt.scored >= later))
                seen.append((pipeline.clocks.clock.get(0), has_later))
                return await execute(*a, **kw)
            pipe.execute = execute_and_look
            return pipe
        redis.pipeline = watched

    _run(pipeline_settings, [[_single(_opened(1)), _single(_hr(1, 1, T))], [_single(_hr(1, 2, later))], "flush"], spy)
    assert any(clock == T for clock, _ in seen), "the test saw no Redis call between the chunks"
    ahead = [(clock, buffered) for clock, buffered in seen if clock is not None and clock >= later and not buffered]
    assert not ahead, ahead
