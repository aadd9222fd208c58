"""End to end on the real broker and Redis: `medm2t replay` of 30 synthetic stays -> `medm2t worker` ->
Redis state, risk.scores.v1, icu.deadletter.v1. The tests run in order and share one worker."""
from __future__ import annotations

import argparse
import select
import subprocess
import time
from collections import defaultdict
from datetime import datetime

import pytest

from conftest import MEDM2T, service_env
from medm2t import topics
from medm2t.events import DeadLetter, Measurement, RiskScore, dump_event, make_event_id
from stream import keys

pytestmark = [pytest.mark.integration, pytest.mark.slow]
START = datetime(2031, 3, 1, 8, 0)
SEED = 5


def _replay(settings, cohort) -> str:
    cmd = [MEDM2T, "replay", "--mimic", str(cohort / "mimic-iv"), "--ecg",
           str(cohort / "mimic-iv-ecg"), "--speed", "max", "--mode", "ward", "--beds", "24", "--seed", str(SEED),
           "--start", START.isoformat(), "--no-progress"]
    done = subprocess.run(cmd, env=service_env(settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _offline(cohort, history_max):
    """The replayed events grouped by stay, exactly as the replay shifts them, and NEWS2 computed offline."""
    from replay.engine import merge_ward
    from replay.sources import open_source
    from stream.news2 import score_view
    from stream.state import offline_view

    ns = argparse.Namespace(mimic=cohort / "mimic-iv", ecg=cohort / "mimic-iv-ecg", meds=None, physionet2012=None,
                            outcomes=None)
    per_stay = defaultdict(list)
    for released in merge_ward(open_source(ns).stays(), 24, START, seed=SEED):
        per_stay[released.event.stay_id].append(released.event)
    return per_stay, {sid: score_view(offline_view(evs, history_max)) for sid, evs in per_stay.items()}


def _wait(predicate, timeout, what, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.5)
    tail = log.read_text()[-3000:] if log is not None and log.exists() else ""
    pytest.fail(f"timed out after {timeout} s waiting for {what}\nworker log tail:\n{tail}")


def _redis(settings):
    import redis

    return redis.Redis.from_url(settings.redis_url, decode_responses=True)


def _counter(r, name) -> int:
    return int(r.hget(keys.COUNTERS, name) or 0)


def _dump(r) -> dict:
    """Every per-stay key with its full content (type-aware), for before/after comparison."""
    out = {}
    for key in sorted(r.scan_iter(match="{stay:*", count=1000)):
        kind = r.type(key)
        if kind == "hash":
            out[key] = r.hgetall(key)
        elif kind == "set":
            out[key] = sorted(r.smembers(key))
        elif kind == "zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == "list":
            out[key] = r.lrange(key, 0, -1)
        else:
            out[key] = r.get(key)
    return out


@pytest.fixture(scope="module")
def replayed(pipeline_settings, synth_cohort, worker_process):
    _, log = worker_process
    r = _redis(pipeline_settings)
    r.flushdb()
    per_stay, expected = _offline(synth_cohort, pipeline_settings.history_max)
    n_inputs = sum(1 for evs in per_stay.values() for e in evs if e.kind != "outcome")
    summary = _replay(pipeline_settings, synth_cohort)
    _wait(lambda: _counter(r, "events_in") >= n_inputs, 150, f"{n_inputs} events applied", log)

    def all_scored():
        raws = r.mget([keys.latest_score(sid, "news2") for sid in expected])
        return all(raw and RiskScore.model_validate_json(raw).scored_at == expected[sid].scored_at
                   for sid, raw in zip(expected, raws))

    _wait(all_scored, 60, "every stay's final NEWS2 score", log)
    return per_stay, expected, n_inputs, summary, log


def test_replay_then_every_stay_has_the_offline_news2_score(pipeline_settings, replayed):
    per_stay, expected, n_inputs, summary, _ = replayed
    assert len(expected) == 30
    assert "replayed 30 stays" in summary
    r = _redis(pipeline_settings)
    assert _counter(r, "events_in") == n_inputs
    for sid, want in expected.items():
        got = RiskScore.model_validate_json(r.get(keys.latest_score(sid, "news2")))
        assert got.tasks == want.tasks, f"stay {sid}"
        assert (got.missing, got.inputs_seen, got.hours_since_admission) == (want.missing, want.inputs_seen,
                                                                             want.hours_since_admission)
        assert r.zcard(keys.score_history(sid, "news2")) >= 1
    assert r.scard(keys.WARD_STAYS) == 30
    assert r.zcard(keys.WARD_ACTIVE) == 0  # every replayed stay was closed


def test_every_score_update_is_on_the_scores_topic(pipeline_settings, replayed):
    from stream.kafka import groupless_consumer

    _, expected, _, _, _ = replayed
    consumer = groupless_consumer(pipeline_settings, [topics.SCORES], True, consumer_timeout_ms=3000)
    try:
        scores = [RiskScore.model_validate_json(m.value) for m in consumer]
    finally:
        consumer.close()
    r = _redis(pipeline_settings)
    assert len(scores) == _counter(r, "scores")
    latest = {}
    for s in scores:  # one stay's updates share a partition, so the topic keeps their order
        latest[s.stay_id] = s
    assert set(latest) == set(expected)
    assert all(latest[sid].tasks == expected[sid].tasks for sid in expected)


def test_replaying_the_same_events_again_changes_no_state(pipeline_settings, synth_cohort, replayed):
    _, _, n_inputs, _, log = replayed
    r = _redis(pipeline_settings)
    before = _dump(r)
    dupes = _counter(r, "duplicates")
    _replay(pipeline_settings, synth_cohort)
    _wait(lambda: _counter(r, "duplicates") >= dupes + n_inputs, 150, "every event recognised as a duplicate", log)
    time.sleep(1.0)  # one more batch window: nothing may be rescored
    assert _dump(r) == before
    assert _counter(r, "events_in") == n_inputs


def test_poison_messages_go_to_the_dead_letter_topic_and_scoring_goes_on(pipeline_settings, replayed, worker_process):
    from stream.kafka import groupless_consumer, make_producer

    per_stay, expected, _, _, log = replayed
    r = _redis(pipeline_settings)
    sid = next(iter(expected))
    last = per_stay[sid][-1]
    deadletters = _counter(r, "deadletters")
    fresh = Measurement(event_id=make_event_id("test", "late-hr", sid), stay_id=sid, subject_id=last.subject_id,
                        time=last.available_time, available_time=last.available_time, source="test", item="220045",
                        category="vital", concept="hr", value=150.0)
    missing_field = dump_event(fresh).replace(b'"category":"vital",', b"")
    producer = make_producer(pipeline_settings)
    producer.send(topics.EVENTS, key=str(sid).encode(), value=b"\x00not json at all")
    producer.send(topics.EVENTS, key=str(sid).encode(), value=missing_field)
    producer.send(topics.EVENTS, key=str(sid).encode(), value=dump_event(fresh))
    producer.close()

    _wait(lambda: _counter(r, "deadletters") >= deadletters + 2, 60, "two dead letters", log)

    def rescored():
        s = RiskScore.model_validate_json(r.get(keys.latest_score(sid, "news2")))
        return s.tasks["news2"].detail["hr_points"] == 3

    _wait(rescored, 60, "the valid event after the poison ones to be scored", log)
    consumer = groupless_consumer(pipeline_settings, [topics.DEADLETTER], True, consumer_timeout_ms=3000)
    try:
        letters = [DeadLetter.model_validate_json(m.value) for m in consumer]
    finally:
        consumer.close()
    reasons = [d.reason for d in letters if d.key == str(sid)]
    assert any(reason.startswith("invalid event") and "category" in reason for reason in reasons), reasons
    assert any("json" in reason.lower() for reason in reasons), reasons
    assert all(d.topic == topics.EVENTS and d.offset is not None for d in letters)
    assert worker_process[0].poll() is None, "the worker must keep running after bad input"


def test_alerts_command_prints_what_the_worker_raised(pipeline_settings, replayed):
    from medm2t.events import Alert

    r = _redis(pipeline_settings)
    raised = _counter(r, "alerts")
    assert raised > 0, "30 synthetic stays should raise at least one NEWS2 alert"
    for _ in range(5):  # the worker counts an alert just before it publishes it: allow it to land
        done = subprocess.run([MEDM2T, "alerts", "--json"], env=service_env(pipeline_settings), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr[-2000:]
        printed = [Alert.model_validate_json(line) for line in done.stdout.splitlines()]
        if len(printed) >= _counter(r, "alerts"):
            break
        time.sleep(1.0)
    assert len(printed) == _counter(r, "alerts")
    urgent = subprocess.run([MEDM2T, "alerts", "--json", "--min-level", "emergency"], env=service_env(pipeline_settings),
                            capture_output=True, text=True, timeout=60)
    assert [Alert.model_validate_json(line) for line in urgent.stdout.splitlines()] == \
        [a for a in printed if a.level == "emergency"]


def test_alerts_follow_prints_new_alerts_as_they_arrive(pipeline_settings, replayed):
    from medm2t.events import Alert
    from stream.kafka import make_producer

    follower = subprocess.Popen([MEDM2T, "alerts", "--follow", "--json"], env=service_env(pipeline_settings),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = ""  # it says "following ..." on stderr once it is positioned at the end of the topic
        while "following" not in line:
            ready, _, _ = select.select([follower.stderr], [], [], 60)
            assert ready, "`medm2t alerts --follow` did not say it was following within 60 s"
            line = follower.stderr.readline()
            assert line, "`medm2t alerts --follow` exited early"
        alert = Alert(alert_id="follow-test", stay_id=1, subject_id=1, scorer="news2", model_version="test",
                      task="news2", level="urgent", state="raised", reason="test alert", value=5.0, at=START)
        producer = make_producer(pipeline_settings)
        producer.send(topics.ALERTS, key=b"1", value=alert.model_dump_json().encode())
        producer.close()
        seen = []  # the worker may still publish late alerts of its own: look for ours among them
        while alert not in seen:
            ready, _, _ = select.select([follower.stdout], [], [], 30)
            assert ready, f"`medm2t alerts --follow` printed no new alert within 30 s; saw {len(seen)} others"
            seen.append(Alert.model_validate_json(follower.stdout.readline()))
    finally:
        follower.terminate()
        follower.wait(timeout=10)
