"""End to end on the real broker and Redis: `medm2t replay` of 30 synthetic stays -> `medm2t worker` ->
Redis state, risk.scores.v1, icu.deadletter.v1. The score stream must be the contract's (tests/helpers/contract.py),
also after a kill -9 of the worker mid-replay. The tests run in order and share one cohort."""
from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import time
from collections import defaultdict
from datetime import timedelta

import pytest

from medm2t import topics
from medm2t.events import Alert, DeadLetter, Measurement, Outcome, RiskScore, dump_event, make_event_id
from stream import keys
from stream.offline import score_stream
from tests.helpers.contract import compare, expected_scores
from tests.helpers.paths import MEDM2T
from tests.helpers.pipeline import (START, _answers, _counter, _fresh, _idle, _per_stay, _read, _redis, _replay,
                                    _replayed, _wait)
from tests.helpers.processes import running_worker, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _disturbed_run(settings, cohort, undisturbed):
    """Start a run to disturb: the undisturbed run's worker stops (this run's workers own the consumer group
    alone), Redis and the output topics are emptied, and the replay starts. Returns (redis, replay)."""
    from stream.services import stop_process_group

    stop_process_group(undisturbed["proc"], timeout=20)
    _fresh(settings)
    return _redis(settings), _replay(settings, cohort)


def _assert_same_as_undisturbed(settings, want, undisturbed) -> None:
    """The published scores are the contract's and the alert records the undisturbed run's (which are the
    offline engine's: test_the_alert_stream_is_the_offline_engines)."""
    scores, _ = score_stream(_read(settings, topics.SCORES))
    assert compare(scores, want) == []
    _assert_same_alerts(_alerts(settings), undisturbed["alerts"], "the undisturbed run", settings, want)


def _assert_same_alerts(got: dict[str, str], expected: dict[str, str], what: str, settings, want) -> None:
    """`got` == `expected` by alert id; on a difference, each record in words and which side the offline
    engine agrees with."""
    extra, missing = sorted(got.keys() - expected.keys()), sorted(expected.keys() - got.keys())
    if extra or missing:
        offline = _offline_alerts(settings, want)
        lines = [f"  extra   {got[k]} (offline engine: {'has it' if k in offline else 'not'})" for k in extra]
        lines += [f"  missing {expected[k]} (offline engine: {'has it' if k in offline else 'not'})" for k in missing]
        raise AssertionError(f"alert records differ from {what}'s:\n" + "\n".join(lines))


def _offline_alerts(settings, want) -> dict[str, str]:
    """The offline engine's alert records over the contract's scores, in the form of _alerts."""
    from stream.alert_tuning import alert_trails
    from stream.policy import load_policy

    by_stay: dict[int, list] = {}
    for key in sorted(want, key=lambda k: (k[0], k[2])):
        by_stay.setdefault(key[0], []).append(want[key])
    trails = alert_trails(load_policy(settings, sorted({k[1] for k in want})), by_stay)
    return {a.alert_id: _line(a) for trail in trails.values() for a in trail}


def _line(a: Alert) -> str:
    return f"stay {a.stay_id} {a.scorer} {a.task} {a.state} {a.level} at {a.at} ({a.reason})"


def _alerts(settings) -> dict[str, str]:
    """The published alert records by id, each as a line a reader can compare."""
    out = {}
    for v in _read(settings, topics.ALERTS):
        a = Alert.model_validate_json(v)
        out[a.alert_id] = _line(a)
    return out


@pytest.fixture(scope="module")
def cohort_expectation(synth_cohort):
    from stream.scorers.news2 import News2Scorer

    per_stay = _per_stay(synth_cohort)
    n_inputs = sum(len(evs) for evs in per_stay.values())
    return per_stay, n_inputs, expected_scores(per_stay, [News2Scorer()])


@pytest.fixture(scope="module")
def undisturbed(pipeline_settings, synth_cohort, cohort_expectation):
    """One replay into one worker, left alone: its scores and alerts."""
    _, n_inputs, _ = cohort_expectation
    _fresh(pipeline_settings)
    log = pipeline_settings.run_dir / "worker-undisturbed.log"
    with running_worker(pipeline_settings, log) as proc:
        summary = _replayed(pipeline_settings, synth_cohort)
        r = _redis(pipeline_settings)
        _wait(lambda: _idle(r, n_inputs), 180, "every point scored", log)
        scores, n = score_stream(_read(pipeline_settings, topics.SCORES))
        alerts = _alerts(pipeline_settings)
        yield {"proc": proc, "log": log, "summary": summary, "scores": scores, "n_messages": n, "alerts": alerts}


def test_the_score_stream_is_the_contracts(pipeline_settings, undisturbed, cohort_expectation):
    per_stay, n_inputs, want = cohort_expectation
    assert "replayed 30 stays" in undisturbed["summary"]
    assert compare(undisturbed["scores"], want) == []
    assert undisturbed["n_messages"] == len(want), "an undisturbed run publishes each point once"
    r = _redis(pipeline_settings)
    assert _counter(r, "events_in") == n_inputs
    for sid, events in per_stay.items():  # the latest score is at the stay's last event
        latest = RiskScore.model_validate_json(r.get(keys.latest_score(sid, "news2")))
        assert latest.scored_at == max(e.available_time for e in events)
        assert latest == undisturbed["scores"][(sid, "news2", latest.scored_at)]
    assert r.scard(keys.WARD_STAYS) == 30
    assert r.zcard(keys.WARD_ACTIVE) == 0  # every replayed stay was closed
    assert undisturbed["alerts"], "30 synthetic stays should raise at least one NEWS2 alert"


def test_the_deprecated_v1_alert_topic_carries_the_same_records(pipeline_settings, undisturbed):
    """risk.alerts.v1 is still written (docs/schemas.md): the same records, both escalations as 'escalated'."""
    from medm2t.events import ESCALATIONS, AlertV1

    v1 = {a.alert_id: a for a in map(AlertV1.model_validate_json, _read(pipeline_settings, topics.ALERTS_V1))}
    v2 = {a.alert_id: a for a in map(Alert.model_validate_json, _read(pipeline_settings, topics.ALERTS))}
    assert v1.keys() == v2.keys() == undisturbed["alerts"].keys()
    assert any(a.state in ESCALATIONS for a in v2.values()), "the cohort should escalate at least once"
    for alert_id, a in v2.items():
        assert v1[alert_id].state == ("escalated" if a.state in ESCALATIONS else a.state)
        assert v1[alert_id].upgraded() == a


def test_the_alert_stream_is_the_offline_engines(pipeline_settings, undisturbed, cohort_expectation):
    """The worker's alert records (timers included) are what the offline engine makes of the contract's
    scores: timers fire on the clinical clock, whatever the batches and wall-clock timing."""
    _, _, want = cohort_expectation
    _assert_same_alerts(undisturbed["alerts"], _offline_alerts(pipeline_settings, want), "the offline engine",
                        pipeline_settings, want)


def test_bad_messages_go_to_the_dead_letter_topic_and_scoring_goes_on(pipeline_settings, synth_cohort,
                                                                      cohort_expectation, undisturbed):
    from medm2t.kafka import make_producer

    per_stay, n_inputs, _ = cohort_expectation
    proc, log = undisturbed["proc"], undisturbed["log"]
    r = _redis(pipeline_settings)
    sid = next(iter(per_stay))
    last = per_stay[sid][-1]
    # after everything replayed (in partition order: an earlier time would be placed at the partition's clock)
    at = max(e.available_time for events in per_stay.values() for e in events) + timedelta(minutes=1)
    fresh = Measurement(event_id=make_event_id("test", "late-hr", sid), stay_id=sid, subject_id=last.subject_id,
                        time=at, available_time=at, source="test",
                        item="220045", category="vital", concept="hr", value=150.0)
    conflict = per_stay[sid][3].model_copy(update={"source": "forged"})
    producer = make_producer(pipeline_settings)
    producer.send(topics.EVENTS, key=str(sid).encode(), value=b"\x00not json at all")
    producer.send(topics.EVENTS, key=str(sid).encode(), value=dump_event(fresh).replace(b'"category":"vital",', b""))
    producer.send(topics.EVENTS, key=b"12345", value=dump_event(fresh))          # key is not the stay
    producer.send(topics.EVENTS, key=str(sid).encode(), value=dump_event(conflict))  # same id, other content
    producer.send(topics.EVENTS, key=str(sid).encode(), value=dump_event(fresh))
    producer.close()

    def rescored():
        s = RiskScore.model_validate_json(r.get(keys.latest_score(sid, "news2")))
        return s.tasks["news2"].detail["hr_points"] == 3

    _wait(rescored, 60, lambda: f"the valid event after the bad ones to be scored; latest "
          f"{r.get(keys.latest_score(sid, 'news2'))} meta {r.hgetall(keys.meta(sid))}", log)
    _wait(lambda: _counter(r, "deadletters") >= 4, 30, "four dead letters", log)
    letters = [DeadLetter.model_validate_json(v) for v in _read(pipeline_settings, topics.DEADLETTER)]
    reasons = " | ".join(d.reason for d in letters)
    assert len(letters) == 4, reasons
    assert "json" in reasons.lower() and "category" in reasons and "key" in reasons and "conflict" in reasons
    assert all(d.topic == topics.EVENTS and d.offset is not None for d in letters)
    # (reasons only: the wall-clock "at" and the offsets may contain these digits by chance)
    assert not any("150" in d.reason for d in letters), "dead letters carry no values"
    assert set(DeadLetter.model_fields) == {"topic", "partition", "offset", "reason", "at"}, "no content field"
    assert proc.poll() is None, "the worker must keep running after bad input"
    # The same replay again: every event is a duplicate and no state changes.
    before = _counter(r, "duplicates")
    _replayed(pipeline_settings, synth_cohort)
    _wait(lambda: _counter(r, "duplicates") >= before + n_inputs, 120, "every event recognised as a duplicate", log)
    assert _counter(r, "events_in") == n_inputs + 1


def test_every_unacknowledged_escalation_is_on_time_and_at_or_above_its_threshold(pipeline_settings, undisturbed):
    """Issue 26's done-when, on a replay nobody acknowledges: each 'not acknowledged' escalation comes exactly
    escalate_after_min clinical minutes after its level began (or, after resolving, at the score where its
    condition stands again), and none is below its level's threshold."""
    from stream.policy import DEFAULT_POLICY

    records: dict[str, list[Alert]] = defaultdict(list)
    seen = set()
    for a in map(Alert.model_validate_json, _read(pipeline_settings, topics.ALERTS)):
        if a.alert_id not in seen:  # per stay in order: one partition each
            seen.add(a.alert_id)
            records[a.episode_id].append(a)
    on_time = late = 0
    for trail in records.values():
        began, escalation = None, 0
        for a in trail:
            if a.state in ("raised", "level-rose", "de-escalated", "re-presented", "unsnoozed"):  # the level began
                began = a.at
            elif a.state == "not-acknowledged":
                assert a.escalation == escalation + 1
                threshold = DEFAULT_POLICY.rule(a.scorer, a.task).raise_at(a.level)
                assert a.value >= threshold, f"escalated below its threshold: {a}"
                if a.at - began == timedelta(minutes=DEFAULT_POLICY.escalate_after_min):
                    on_time += 1
                else:
                    assert a.score_id is not None and a.at > began, f"escalated off its deadline: {a}"
                    late += 1  # resolving at the deadline, standing again at this score
            escalation = a.escalation
    assert on_time > 0 and on_time >= 5 * late, (on_time, late)


def test_alerts_command_prints_what_the_worker_raised(pipeline_settings, undisturbed):
    done = subprocess.run([MEDM2T, "alerts", "--json", "--from-beginning"], env=service_env(pipeline_settings),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = [Alert.model_validate_json(line) for line in done.stdout.splitlines()]
    assert printed
    urgent = subprocess.run([MEDM2T, "alerts", "--json", "--from-beginning", "--min-level", "emergency"],
                            env=service_env(pipeline_settings), capture_output=True, text=True, timeout=60)
    assert [Alert.model_validate_json(line) for line in urgent.stdout.splitlines()] == \
        [a for a in printed if a.level == "emergency"]


def _quality_from_topics(alert_values: list[bytes], outcome_values: list[bytes]) -> dict[str, dict]:
    """docs/alert-quality.md recomputed from the two topics alone, without stream/quality.py."""
    outcomes = {}
    for v in outcome_values:
        o = Outcome.model_validate_json(v)
        outcomes[o.stay_id] = o
    alerts = [a for a in map(Alert.model_validate_json, alert_values) if a.stay_id in outcomes]
    # ICU days; PhysioNet 2012 outcomes give only a length of stay (docs/alert-quality.md, caveats)
    days = sum((o.icu_outtime - o.icu_intime).total_seconds() / 86400 if o.icu_intime and o.icu_outtime
               else o.los_days or 0.0 for o in outcomes.values())
    deaths = [o for o in outcomes.values() if o.hospital_death]
    report = {}
    for scorer in {a.scorer for a in alerts}:
        clinical = [a for a in alerts if a.scorer == scorer and a.task != "news2:stale-vitals"]
        raised = [a for a in clinical if a.state == "raised"]
        urgent = defaultdict(list)
        for a in clinical:
            if a.level in ("urgent", "emergency") and a.state != "cleared":
                urgent[a.stay_id].append(a.at)
        urgent = dict(urgent)  # reading a defaultdict would add every unflagged death to `flagged` below
        leads = [o.deathtime - min(t for t in urgent[o.stay_id] if t <= o.deathtime) for o in deaths
                 if o.deathtime and any(t <= o.deathtime for t in urgent.get(o.stay_id, ()))]
        leads_h = sorted(x.total_seconds() / 3600 for x in leads)
        median = None if not leads_h else (leads_h[(len(leads_h) - 1) // 2] + leads_h[len(leads_h) // 2]) / 2
        flagged = [s for s in urgent if outcomes[s].hospital_death is not None]
        report[scorer] = {
            "alerts_per_patient_day": len(raised) / days, "stays_alerted": len({a.stay_id for a in raised}) / len(outcomes),
            "deaths": len(deaths), "deaths_flagged_2h": sum(x >= timedelta(hours=2) for x in leads) / len(deaths) if deaths else None,
            "median_lead_hours": median,
            "ppv": sum(outcomes[s].hospital_death for s in flagged) / len(flagged) if flagged else None,
        }
    return report


def test_report_json_equals_a_recomputation_from_the_alert_and_outcome_topics(pipeline_settings, undisturbed):
    outcome_values = _read(pipeline_settings, topics.OUTCOMES)
    stays = {Outcome.model_validate_json(v).stay_id for v in outcome_values}  # a replay twice: each stay twice
    r = _redis(pipeline_settings)
    _wait(lambda: r.hlen(keys.QUALITY_OUTCOMES) == len(stays) > 0, 60, "the outcome agent", undisturbed["log"])
    done = subprocess.run([MEDM2T, "report", "--json"], env=service_env(pipeline_settings), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    import json

    report = json.loads(done.stdout)
    want = _quality_from_topics(_read(pipeline_settings, topics.ALERTS), outcome_values)
    assert report["outcomes"] == len(stays)
    assert want["news2"]["deaths"] > 0 and want["news2"]["alerts_per_patient_day"] > 0  # a test that can fail
    for scorer, figures in want.items():
        for key, value in figures.items():
            assert report["scorers"][scorer][key] == pytest.approx(value), (scorer, key)
    human = subprocess.run([MEDM2T, "report"], env=service_env(pipeline_settings), capture_output=True, text=True,
                           timeout=60)
    assert "alerts per patient-day" in human.stdout and "news2" in human.stdout


def test_alerts_follow_prints_new_alerts_as_they_arrive(pipeline_settings):
    from medm2t.kafka import make_producer

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
        seen = []
        while alert not in seen:
            ready, _, _ = select.select([follower.stdout], [], [], 30)
            assert ready, f"`medm2t alerts --follow` printed no new alert within 30 s; saw {len(seen)} others"
            seen.append(Alert.model_validate_json(follower.stdout.readline()))
    finally:
        follower.terminate()
        follower.wait(timeout=10)


def test_alerts_ack_goes_through_the_broker_to_the_worker_and_into_the_audit_trail(pipeline_settings, undisturbed):
    from dashboard.data import open_alerts

    r = _redis(pipeline_settings)
    open_ = [a for sid in r.smembers(keys.WARD_STAYS)
             for a in open_alerts([Alert.model_validate_json(v) for v in r.lrange(keys.stay_alerts(int(sid)), 0, -1)])
             if a.acknowledged_by is None]
    assert open_, "the replay should leave some alert open (stays close with alerts open)"
    target = open_[0]
    done = subprocess.run([MEDM2T, "alerts", "ack", target.alert_id, "--by", "nurse.kim", "--reason", "at the bedside"],
                          env=service_env(pipeline_settings), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "acknowledged" in done.stdout and "by nurse.kim" in done.stdout
    audit = [Alert.model_validate_json(v) for v in r.lrange(keys.stay_alerts(target.stay_id), 0, 0)]
    assert (audit[0].state, audit[0].by, audit[0].episode_id) == ("acknowledged", "nurse.kim", target.episode_id)
    assert audit[0].alert_id in {Alert.model_validate_json(v).alert_id for v in _read(pipeline_settings, topics.ALERTS)}
    unknown = subprocess.run([MEDM2T, "alerts", "ack", "no-such-alert", "--by", "nurse.kim"],
                             env=service_env(pipeline_settings), capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "no alert no-such-alert is known" in unknown.stderr


def test_kill_9_mid_replay_then_restart_gives_the_same_scores_and_alerts(pipeline_settings, synth_cohort,
                                                                         cohort_expectation, undisturbed):
    _, n_inputs, want = cohort_expectation
    r, replay = _disturbed_run(pipeline_settings, synth_cohort, undisturbed)
    log = pipeline_settings.run_dir / "worker-killed.log"
    with running_worker(pipeline_settings, log) as first:
        _wait(lambda: _counter(r, "events_in") >= n_inputs // 2, 180, "half of the events applied", log)
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    assert replay.wait(timeout=180) == 0
    assert not _idle(r, n_inputs), "the kill came too late to test anything"
    with running_worker(pipeline_settings, log):
        _wait(lambda: _idle(r, n_inputs), 240, "every point scored after the restart", log)
        _assert_same_as_undisturbed(pipeline_settings, want, undisturbed)


def test_a_redis_restart_mid_replay_gives_the_same_scores_and_alerts(pipeline_settings, synth_cohort,
                                                                      cohort_expectation, undisturbed,
                                                                      tmp_path_factory, redis_password):
    """Redis (AOF on, as `medm2t stack up` runs it) is stopped mid-replay and started again 3 s later: the
    worker retries instead of crashing, and ends with the undisturbed run's scores and alerts."""
    from stream.services import free_port, redis_service

    _, n_inputs, want = cohort_expectation
    svc = redis_service(free_port(), tmp_path_factory.mktemp("redis-restart"), password=redis_password)
    svc.start()
    try:
        settings = pipeline_settings.model_copy(
            update={"redis_url": f"redis://:{redis_password}@127.0.0.1:{svc.port}/0"})
        r, replay = _disturbed_run(settings, synth_cohort, undisturbed)
        log = settings.run_dir / "worker-redis-restart.log"
        with running_worker(settings, log) as proc:
            _wait(lambda: _counter(r, "events_in") >= n_inputs // 3, 180, "a third of the events applied", log)
            svc.stop()
            time.sleep(3)
            assert proc.poll() is None, "the worker died when Redis went away"
            svc.start()
            assert replay.wait(timeout=180) == 0
            r = _redis(settings)
            _wait(lambda: _answers(r), 60, "Redis to finish loading its AOF", log)
            _wait(lambda: _idle(r, n_inputs), 240, "every point scored after the Redis restart", log)
            assert proc.poll() is None
            _assert_same_as_undisturbed(settings, want, undisturbed)
    finally:
        svc.stop()


def test_a_broker_pause_mid_replay_gives_the_same_scores_and_alerts(pipeline_settings, synth_cohort,
                                                                     cohort_expectation, undisturbed, services_dir):
    """The broker is frozen (SIGSTOP) for 10 s mid-replay, then resumed: the same scores and alerts."""
    _, n_inputs, want = cohort_expectation
    broker = int((services_dir / "kafka.pid").read_text())
    r, replay = _disturbed_run(pipeline_settings, synth_cohort, undisturbed)
    log = pipeline_settings.run_dir / "worker-broker-pause.log"
    with running_worker(pipeline_settings, log) as proc:
        _wait(lambda: _counter(r, "events_in") >= n_inputs // 3, 180, "a third of the events applied", log)
        os.kill(broker, signal.SIGSTOP)
        try:
            time.sleep(10)
        finally:
            os.kill(broker, signal.SIGCONT)
        assert replay.wait(timeout=180) == 0
        _wait(lambda: _idle(r, n_inputs), 240, "every point scored after the broker pause", log)
        assert proc.poll() is None
        _assert_same_as_undisturbed(pipeline_settings, want, undisturbed)


def test_a_second_worker_joining_mid_replay_gives_the_same_scores_and_alerts(pipeline_settings, synth_cohort,
                                                                              cohort_expectation, undisturbed):
    """A second worker joins the consumer group mid-replay: the partitions are split (a rebalance), each
    worker rebuilds the stays it gains from Redis, and together they publish the undisturbed stream."""
    _, n_inputs, want = cohort_expectation
    r, replay = _disturbed_run(pipeline_settings, synth_cohort, undisturbed)
    logs = [pipeline_settings.run_dir / f"worker-rebalance-{i}.log" for i in (1, 2)]
    with running_worker(pipeline_settings, logs[0]) as first:
        _wait(lambda: _counter(r, "events_in") >= n_inputs // 3, 180, "a third of the events applied", logs[0])
        with running_worker(pipeline_settings, logs[1]) as second:
            assert replay.wait(timeout=180) == 0
            _wait(lambda: re.search(r"assigned partitions \[\d", logs[1].read_text()), 60,
                  "partitions assigned to the second worker", logs[1])
            _wait(lambda: _idle(r, n_inputs), 240, "every point scored by the two workers", logs[1])
            assert first.poll() is None and second.poll() is None
            _assert_same_as_undisturbed(pipeline_settings, want, undisturbed)


def test_one_command_runs_a_worker_per_core_and_restarts_one_that_stops(pipeline_settings, synth_cohort,
                                                                              cohort_expectation, undisturbed):
    """`medm2t worker --processes 2`: two processes in one consumer group split the partitions; one is stopped
    from outside mid-replay and the command restarts it; together they publish the undisturbed stream, and
    SIGTERM to the command stops both. (A kill -9 of a lone worker is the kill -9 test above; with -9 of one
    of two processes here, one CI run of 2026-12-06 published one alert record more than the undisturbed
    run: not yet explained, see the closing note of that day.)"""
    import psutil

    _, n_inputs, want = cohort_expectation
    r, replay = _disturbed_run(pipeline_settings, synth_cohort, undisturbed)
    log = pipeline_settings.run_dir / "worker-processes.log"
    # A consumer group of its own: after this test's stop, restart and stop, tansu no longer assigned the
    # group's partitions to a new member (the next test's worker waited for ever).
    group = {"MEDM2T_WORKER_GROUP": "medm2t-worker-processes"}
    with running_worker(pipeline_settings, log, "--processes", "2", **group) as proc:
        workers = lambda: psutil.Process(proc.pid).children()  # noqa: E731
        _wait(lambda: len(workers()) == 2, 30, "two worker processes", log)
        _wait(lambda: _counter(r, "events_in") >= n_inputs // 3, 180, "a third of the events applied", log)
        victim = workers()[0]
        victim.terminate()
        _wait(lambda: "restarting it" in log.read_text() and len(workers()) == 2 and victim not in workers(), 60,
              "the stopped worker process restarted", log)
        assert replay.wait(timeout=180) == 0
        _wait(lambda: _idle(r, n_inputs), 240, "every point scored by the two processes", log)
        assert proc.poll() is None
        _assert_same_as_undisturbed(pipeline_settings, want, undisturbed)
        children = workers()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
        assert not any(c.is_running() and c.status() != psutil.STATUS_ZOMBIE for c in children)


def test_the_worker_on_a_3_node_redis_cluster_gives_the_same_scores_and_alerts(pipeline_settings, synth_cohort,
                                                                                cohort_expectation, undisturbed,
                                                                                tmp_path_factory):
    """Scale-out of the state: a local 3-primary Redis Cluster (redis-cli --cluster create) instead of one
    Redis. Each stay's keys share one hash slot, so its APPLY and COMMIT scripts run on one node; the stays
    spread over all three, and the score stream and alerts are the undisturbed run's."""
    from medm2t.settings import RedisSettings
    from stream.services import free_port, redis_cluster

    _, n_inputs, want = cohort_expectation
    nodes = redis_cluster([free_port() for _ in range(3)], tmp_path_factory.mktemp("redis-cluster"))
    try:
        settings = pipeline_settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{nodes[0].port}/0",
                                                        "redis": RedisSettings(password="", cluster=True)})
        r, replay = _disturbed_run(settings, synth_cohort, undisturbed)
        log = settings.run_dir / "worker-redis-cluster.log"
        with running_worker(settings, log) as proc:
            assert replay.wait(timeout=180) == 0
            _wait(lambda: _idle(r, n_inputs), 240, "every point scored on the cluster", log)
            assert proc.poll() is None
            _assert_same_as_undisturbed(settings, want, undisturbed)
        stays_per_node = [sum(1 for _ in r.get_redis_connection(node).scan_iter(match="{stay:*}:meta"))
                          for node in r.get_primaries()]
        assert len(stays_per_node) == 3 and all(stays_per_node), stays_per_node
    finally:
        for node in nodes:
            node.stop()
