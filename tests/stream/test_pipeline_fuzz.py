"""10,000 bad messages interleaved with a good replay, through the worker's pipeline on a real Redis: every
bad one is dead-lettered with a reason, nothing raises, and the scores and stored state are exactly those
of the good replay alone (and the contract's). Kafka is left out (a list stands in for the producer) so
that the 10,000 run in seconds; tests/stream/test_pipeline_integration.py sends bad messages through the real
broker and worker."""
from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import defaultdict
from datetime import datetime

import pytest

from medm2t import topics
from medm2t.events import DeadLetter, dump_event
from stream import keys
from tests.helpers.bad_messages import bad_message_cases
from stream.offline import score_stream
from tests.helpers.contract import compare, expected_scores

pytestmark = pytest.mark.integration
N_BAD = 10_000
N_SET_BAD = 3_000   # candidates for bad members planted inside observation sets
N_STAYS = 8


@pytest.fixture(scope="module")
def good_stream(synth_cohort):
    """The replay's input events of N_STAYS stays, in release order (one partition)."""
    import argparse

    from replay.engine import merge_ward
    from replay.sources import open_source

    ns = argparse.Namespace(mimic=synth_cohort / "mimic-iv", ecg=synth_cohort / "mimic-iv-ecg", meds=None,
                            physionet2012=None, outcomes=None)
    events, stays = [], set()
    for released in merge_ward(open_source(ns).stays(), 24, datetime(2031, 3, 1, 8), seed=5):
        e = released.event
        if e.kind == "outcome":
            continue
        if e.stay_id not in stays and len(stays) < N_STAYS:
            stays.add(e.stay_id)
        if e.stay_id in stays:
            events.append(e)
    return events


def _run(settings, db: int, messages: list[tuple[bytes, bytes]], around_chunk=None) -> tuple[dict, dict, dict]:
    """Feed (key, value) messages through a NEWS2 pipeline on Redis `db` as one partition, then let every
    point complete. `around_chunk(redis)` may return stream.offline.feed's hook. Returns (messages sent per
    topic, stored events per stay, counters)."""
    from medm2t.connections import redis_async, redis_sync
    from stream.scorers.news2 import News2Scorer
    from stream.offline import MemorySink, feed
    from stream.pipeline import Pipeline
    from stream.state import StayStore

    db_settings = settings.model_copy(update={"redis_url": settings.redis_url.rsplit("/", 1)[0] + f"/{db}"})
    redis_sync(db_settings).flushdb()
    sink = MemorySink()

    async def main():
        redis = redis_async(db_settings)
        try:
            scorer = News2Scorer()
            pipeline = Pipeline(StayStore(redis, [scorer.needs]), [scorer], sink.send, idle_ms=10**9)
            await pipeline.assign({0})
            await feed(pipeline, [(0, k, v) for k, v in messages], chunk=500,
                       around_chunk=around_chunk(redis) if around_chunk else None)
            assert pipeline.pending_points() == 0
        finally:
            await redis.aclose()

    asyncio.run(main())
    r = redis_sync(db_settings)
    stays = {int(k.split(b":")[1].strip(b"}")) for k in r.scan_iter(match="{stay:*}:meta")}
    stored = {sid: r.zrange(keys.events(sid), 0, -1, withscores=True) for sid in stays}
    return sink.sent, stored, {k.decode(): int(v) for k, v in r.hgetall(keys.COUNTERS).items()}


def _mixed(events) -> list[tuple[bytes, bytes]]:
    """The input messages of `events` (in release order) as `medm2t replay` sends them (observation sets of
    one stay's events at one time) for even stays, and one event per message for odd ones, as a v1 producer
    would: a partition carries both."""
    from medm2t.events import set_messages
    from replay.engine import Released, by_message

    out = []
    for _, group in by_message(Released(e.available_time, e) for e in events):
        key = str(group[0].stay_id).encode()
        out += [(key, v) for v, _ in set_messages(group)] if group[0].stay_id % 2 == 0 else \
            [(key, dump_event(e)) for e in group]
    return out


def _without_wall_clock(alerts: list[bytes]) -> list[str]:
    """Alert records, sorted, less the wall clock they were made at (everything else is a function of the input)."""
    from medm2t.events import Alert

    return sorted(Alert.model_validate_json(a).model_copy(update={"wall_at": None}).model_dump_json() for a in alerts)


def test_ten_thousand_bad_messages_change_nothing_but_the_dead_letter_topic(pipeline_settings, good_stream):
    from stream.scorers.news2 import News2Scorer

    good = _mixed(good_stream)
    assert len(good) < len(good_stream), "some messages should carry an observation set"
    cases = bad_message_cases(N_BAD, seed=11, good=[dump_event(e) for e in good_stream[:400]])
    rng = random.Random(3)
    mixed = [(None, k, v) for k, v in good] + [(c, str(good_stream[0].stay_id).encode(), c.data) for c in cases]
    rng.shuffle(mixed)
    # the good events keep their own order (a partition's order); the bad ones fall in between
    good_iter = iter(good)
    mixed = [(c, k, v) if c is not None else (None, *next(good_iter)) for c, k, v in mixed]

    clean, clean_state, clean_counts = _run(pipeline_settings, 2, good)
    fuzzed, fuzzed_state, fuzzed_counts = _run(pipeline_settings, 3, [(k, v) for _, k, v in mixed])

    letters = [DeadLetter.model_validate_json(v) for v in fuzzed[topics.DEADLETTER]]
    assert len(letters) == N_BAD and fuzzed_counts["deadletters"] == N_BAD
    bad_offsets = {i: c for i, (c, _, _) in enumerate(mixed) if c is not None}
    assert {d.offset for d in letters} == set(bad_offsets)
    for d in letters:
        case = bad_offsets[d.offset]
        assert d.reason.strip() and d.topic == topics.EVENTS
        if case.fragment:
            assert case.fragment in d.reason, (case.mutation, d.reason)
        if case.planted and len(case.planted) >= 4:
            assert case.planted not in d.reason, (case.mutation, d.reason)
    assert not clean[topics.DEADLETTER]

    # Batches are cut elsewhere, so the topic order may differ; the set of messages may not.
    assert sorted(fuzzed[topics.SCORES]) == sorted(clean[topics.SCORES]), "the bad messages changed the scores"
    assert _without_wall_clock(fuzzed[topics.ALERTS]) == _without_wall_clock(clean[topics.ALERTS])
    assert fuzzed_state == clean_state
    assert {k: v for k, v in fuzzed_counts.items() if k != "deadletters" and not k.startswith("batch")} == \
        {k: v for k, v in clean_counts.items() if not k.startswith("batch")}
    per_stay = defaultdict(list)
    for e in good_stream:
        per_stay[e.stay_id].append(e)
    scores, _ = score_stream(clean[topics.SCORES])
    assert compare(scores, expected_scores(per_stay, [News2Scorer()])) == []


def _strict_json_object_or_value(data: bytes) -> bool:
    """Whether `data` can stand as one member of a set that is still valid JSON (no NaN, no Infinity)."""
    def no_constant(name):
        raise ValueError(name)
    try:
        json.loads(data, parse_constant=no_constant)
    except (ValueError, RecursionError):
        return False
    return True


def test_bad_members_of_observation_sets_are_dead_lettered_alone_and_their_siblings_still_count(
        pipeline_settings, good_stream):
    """Bad events planted inside the replay's observation sets (up to three per set, anywhere in it): each is
    dead-lettered on its own, naming its index in the set, and the scores, alerts and stored state are those
    of the good replay alone: no good sibling is lost."""
    good = _mixed(good_stream)
    sets = [i for i, (_, v) in enumerate(good) if v.startswith(b'{"kind":"observation_set"')]
    assert len(sets) > 50
    cases = [c for c in bad_message_cases(N_SET_BAD, seed=13, good=[dump_event(e) for e in good_stream[:400]])
             if len(c.data) < 20_000 and _strict_json_object_or_value(c.data)]
    rng = random.Random(8)
    members = {i: [(False, raw) for raw in _members(good[i][1])] for i in sets}
    for case in cases:
        i = rng.choice(sets)
        if sum(bad for bad, _ in members[i]) < 3:
            members[i].insert(rng.randint(0, len(members[i])), (True, case.data))
    fuzzed = list(good)
    planted: dict[int, list[int]] = {}
    for i, ms in members.items():
        fuzzed[i] = (good[i][0], _set_value(int(good[i][0]), [raw for _, raw in ms]))
        planted[i] = [k for k, (bad, _) in enumerate(ms) if bad]
    assert sum(map(len, planted.values())) > 500

    clean, clean_state, clean_counts = _run(pipeline_settings, 5, good)
    sent, state, counts = _run(pipeline_settings, 6, fuzzed)

    letters = [DeadLetter.model_validate_json(v) for v in sent[topics.DEADLETTER]]
    assert sorted((d.offset, d.reason.split(":")[0]) for d in letters) == \
        sorted((i, f"observation set member {k}") for i, ks in planted.items() for k in ks)
    assert counts["deadletters"] == len(letters)
    assert sorted(sent[topics.SCORES]) == sorted(clean[topics.SCORES]), "a bad member cost a good sibling"
    assert _without_wall_clock(sent[topics.ALERTS]) == _without_wall_clock(clean[topics.ALERTS])
    assert state == clean_state
    assert {k: v for k, v in counts.items() if k != "deadletters" and not k.startswith("batch")} == \
        {k: v for k, v in clean_counts.items() if not k.startswith("batch")}


def _members(value: bytes) -> list[bytes]:
    """The members of an observation set as the replay wrote them (dump_event's bytes)."""
    return [json.dumps(m, separators=(",", ":"), ensure_ascii=False).encode() for m in json.loads(value)["events"]]


def _set_value(stay_id: int, members: list[bytes]) -> bytes:
    return b'{"kind":"observation_set","stay_id":%d,"events":[%s]}' % (stay_id, b",".join(members))


def test_events_whose_apply_reply_was_lost_are_still_scored(pipeline_settings, good_stream):
    """Redis ran a chunk's APPLY but the worker never got the reply (Redis went away; the call is retried):
    the retry sees only duplicates, yet those events were never buffered. They must still be scored, and
    the stream must equal the one without the lost reply."""
    from redis.exceptions import ConnectionError as RedisConnectionError

    def lose_one_reply_mid_stream(client):
        real_pipeline = client.pipeline

        def losing_pipeline(*args, **kwargs):  # the first execute() runs, then its reply is lost
            pipe = real_pipeline(*args, **kwargs)
            execute = pipe.execute

            async def execute_then_lose(*a, **kw):
                replies = await execute(*a, **kw)
                if not lost:
                    lost.append(True)
                    raise RedisConnectionError("reply lost (test)")
                return replies
            pipe.execute = execute_then_lose
            return pipe

        @contextlib.contextmanager
        def around(n, n_chunks):
            if n == n_chunks // 2:
                client.pipeline = losing_pipeline
            try:
                yield
            finally:
                client.pipeline = real_pipeline
        return around

    lost: list[bool] = []
    good = _mixed(good_stream)
    clean, _, _ = _run(pipeline_settings, 2, good)
    lossy, _, _ = _run(pipeline_settings, 3, good, around_chunk=lose_one_reply_mid_stream)
    assert lost, "no reply was lost: the test tested nothing"
    assert sorted(lossy[topics.SCORES]) == sorted(clean[topics.SCORES])
    assert _without_wall_clock(lossy[topics.ALERTS]) == _without_wall_clock(clean[topics.ALERTS])


def test_every_scored_point_is_timed_once_per_stage_and_the_stages_add_up(pipeline_settings, good_stream):
    """The worker's latency split (medm2t_point_stage_seconds): one observation per stage for each point
    scored, and the stages' sums add up to the event->score total."""
    from prometheus_client import REGISTRY

    from stream.metrics import STAGES

    def totals():
        stage = {s: (REGISTRY.get_sample_value("medm2t_point_stage_seconds_count", {"stage": s}) or 0,
                     REGISTRY.get_sample_value("medm2t_point_stage_seconds_sum", {"stage": s}) or 0) for s in STAGES}
        return stage, (REGISTRY.get_sample_value("medm2t_event_to_score_seconds_count") or 0,
                       REGISTRY.get_sample_value("medm2t_event_to_score_seconds_sum") or 0)

    before, total_before = totals()
    sent, _, _ = _run(pipeline_settings, 4, [(str(e.stay_id).encode(), dump_event(e)) for e in good_stream])
    after, total_after = totals()
    points = len(sent[topics.SCORES])  # NEWS2 alone: one score per point
    assert points > 0
    for s in STAGES:
        assert after[s][0] - before[s][0] == points, s
    assert total_after[0] - total_before[0] == points
    stage_sum = sum(after[s][1] - before[s][1] for s in STAGES)
    assert stage_sum == pytest.approx(total_after[1] - total_before[1], rel=1e-6, abs=1e-6)
