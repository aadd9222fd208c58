"""People acting on alerts, through the worker's pipeline on a real Redis: an acknowledged alert stops
escalating while an unacknowledged one escalates, a snooze comes back when it ends, bad actions are
dead-lettered with a reason, a redelivered action is applied once, and all of it is in the stay's audit trail
and survives a restart. Kafka is left out here (a list stands in for the producer);
test_pipeline_integration.py sends an action through the real broker, worker and `medm2t alerts ack`."""
from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import pytest

from medm2t import topics
from medm2t.events import Alert, AlertAction, DeadLetter, Measurement, StaticFeatures, StayOpened, dump_event
from stream import keys

pytestmark = pytest.mark.integration
DB = 7
T0 = datetime(2150, 1, 1, 8, 0)


class Ward:
    """A NEWS2 pipeline on Redis database DB, fed by hand: vitals per clinical minute, actions as messages."""

    def __init__(self, settings, fresh: bool = True):
        from medm2t.connections import redis_sync

        self.settings = settings.model_copy(update={"redis_url": settings.redis_url.rsplit("/", 1)[0] + f"/{DB}"})
        self.r = redis_sync(self.settings)
        if fresh:
            self.r.flushdb()
        self.offset = 0

    def run(self, steps) -> dict[str, list[bytes]]:
        """Run `steps` (async callables of the pipeline) on a fresh Pipeline; returns what it published."""
        from medm2t.connections import redis_async
        from stream.scorers.news2 import News2Scorer
        from stream.offline import MemorySink, score_all_ready
        from stream.pipeline import Pipeline
        from stream.policy import load_policy
        from stream.state import StayStore

        sink = MemorySink()

        async def main():
            redis = redis_async(self.settings)
            try:
                scorer = News2Scorer()
                pipeline = Pipeline(StayStore(redis, [scorer.needs]), [scorer], sink.send, idle_ms=0,
                                    policy=load_policy(self.settings))
                await pipeline.assign({0})
                for do in steps:
                    await do(pipeline)
                    await pipeline.apply_actions()
                    await score_all_ready(pipeline)
            finally:
                await redis.aclose()

        asyncio.run(main())
        return sink.sent

    def _message(self, topic, key: bytes, value: bytes):
        from stream.runtime import Message

        self.offset += 1
        return Message(topic, 0, self.offset, key, value)

    def vitals(self, minute: int, stays=(1, 2), rr: float = 25, spo2: float = 91):
        """RR 25 and SpO2 91 score 3 + 3: NEWS2 6, urgent."""
        at = T0 + timedelta(minutes=minute)
        events = []
        for sid in stays:
            if minute == 0:
                events.append(StayOpened(event_id=f"o{sid}", stay_id=sid, subject_id=100 + sid, time=at,
                                         available_time=at, source="test", static=StaticFeatures()))
            for concept, value in (("rr", rr), ("spo2", spo2)):
                events.append(Measurement(event_id=f"{sid}-{concept}-{minute}", stay_id=sid, subject_id=100 + sid,
                                          time=at, available_time=at, source="test", item=concept, category="vital",
                                          concept=concept, value=value))
        msgs = [self._message(topics.EVENTS, str(e.stay_id).encode(), dump_event(e)) for e in events]
        return lambda pipeline: pipeline.ingest(msgs)

    def action(self, raw: bytes | AlertAction, stay: int = 1):
        value = raw.model_dump_json().encode() if isinstance(raw, AlertAction) else raw
        msg = self._message(topics.ACTIONS, str(stay).encode(), value)
        return lambda pipeline: pipeline.act_on([msg])

    def audit(self, stay: int) -> list[Alert]:
        return [Alert.model_validate_json(raw) for raw in reversed(self.r.lrange(keys.stay_alerts(stay), 0, -1))]

    def raised(self, stay: int) -> Alert:
        return next(a for a in self.audit(stay) if a.state == "raised" and a.task == "news2")


def _action(alert: Alert, kind: str, n: int, **kw) -> AlertAction:
    return AlertAction(action_id=f"act-{n}", alert_id=alert.alert_id, stay_id=alert.stay_id, action=kind,
                       by=kw.pop("by", "nurse.kim"), at=datetime(2026, 12, 3, 12, 0), **kw)


def _states(alerts: list[Alert], task="news2") -> list[tuple[str, str]]:
    return [(a.state, a.by) for a in alerts if a.task == task]


def test_acknowledged_alerts_stop_escalating_and_unacknowledged_ones_escalate(pipeline_settings):
    ward = Ward(pipeline_settings)
    ward.run([ward.vitals(0)])
    ack = _action(ward.raised(1), "ack", 1)
    sent = ward.run([ward.action(ack)] + [ward.vitals(m) for m in (5, 10, 15, 20, 30)])
    assert _states(ward.audit(1)) == [("raised", "system"), ("acknowledged", "nurse.kim")]
    assert _states(ward.audit(2)) == [("raised", "system"), ("not-acknowledged", "system")]
    escalated = ward.audit(2)[-1]
    assert escalated.at == T0 + timedelta(minutes=15) and escalated.escalation == 1 and escalated.level == "urgent"
    acked = ward.audit(1)[-1]
    assert (acked.acknowledged_by, acked.action_id, acked.episode_id) == ("nurse.kim", "act-1", ward.raised(1).alert_id)
    assert acked.at == T0 and acked.wall_at == ack.at  # clinical clock of the stay, wall clock of the click
    published = {Alert.model_validate_json(v).alert_id for v in sent[topics.ALERTS]}
    assert acked.alert_id in published and escalated.alert_id in published
    assert ward.r.hget(keys.ALERT_STAYS, acked.alert_id) == b"1"

    # A restart reads the acknowledgement back from Redis: stay 1 still does not escalate, and a redelivered
    # action changes nothing.
    again = Ward(pipeline_settings, fresh=False)
    sent = again.run([again.action(ack)] + [again.vitals(m) for m in (40, 50)])
    assert _states(again.audit(1)) == [("raised", "system"), ("acknowledged", "nurse.kim")]
    assert not sent[topics.DEADLETTER] and not sent.get(topics.ALERTS)


def test_a_snoozed_alert_comes_back_when_the_snooze_ends_and_must_be_acknowledged_again(pipeline_settings):
    ward = Ward(pipeline_settings)
    ward.run([ward.vitals(0, stays=(1,))])
    snooze = _action(ward.raised(1), "snooze", 1, reason="fluids running", snooze_minutes=20)
    ward.run([ward.action(snooze)] + [ward.vitals(m, stays=(1,)) for m in (5, 15, 19, 20, 30, 35)])
    aggregate = [a for a in ward.audit(1) if a.task == "news2"]
    states = [(a.state, a.at - T0) for a in aggregate]
    assert states == [("raised", timedelta(0)), ("snoozed", timedelta(0)), ("re-presented", timedelta(minutes=20)),
                      ("not-acknowledged", timedelta(minutes=35))]
    assert aggregate[1].snoozed_until == T0 + timedelta(minutes=20)
    assert "fluids running" in aggregate[1].reason


def test_an_alert_escalates_at_its_deadline_when_only_the_partition_clock_moves_on(pipeline_settings):
    """Stay 1 gets no score after its urgent alert is raised; stay 2's vitals on the same partition tell the
    worker that clinical time passed, so stay 1 escalates at T + 15 min, not at its next score."""
    ward = Ward(pipeline_settings)
    ward.run([ward.vitals(0)] + [ward.vitals(m, stays=(2,), rr=16, spo2=98) for m in (10, 14)])
    assert _states(ward.audit(1)) == [("raised", "system")]  # the partition clock (14 min) has not passed 15
    ward.run([ward.vitals(m, stays=(2,), rr=16, spo2=98) for m in (40, 70)])
    raised, escalated = [a for a in ward.audit(1) if a.task == "news2"]
    assert (raised.level, escalated.state, escalated.level) == ("urgent", "not-acknowledged", "urgent")
    assert escalated.at == T0 + timedelta(minutes=15) and escalated.score_id is None
    assert escalated.value == raised.value


def test_a_snooze_ends_at_its_own_time_without_a_score_of_the_stay(pipeline_settings):
    ward = Ward(pipeline_settings)
    ward.run([ward.vitals(0, stays=(1,))])
    snooze = _action(ward.raised(1), "snooze", 1, reason="fluids running", snooze_minutes=20)
    ward.run([ward.action(snooze)] + [ward.vitals(m, stays=(2,)) for m in (1, 60)])
    states = [(a.state, a.at - T0) for a in ward.audit(1) if a.task == "news2"]
    assert states == [("raised", timedelta(0)), ("snoozed", timedelta(0)), ("re-presented", timedelta(minutes=20)),
                      ("not-acknowledged", timedelta(minutes=35))]


def test_bad_actions_are_dead_lettered_with_a_reason_and_change_nothing(pipeline_settings):
    ward = Ward(pipeline_settings)
    ward.run([ward.vitals(0, stays=(1,))])
    raised = ward.raised(1)
    before = ward.r.hgetall(keys.alert_state(1))
    bad = [
        b"{not json",
        b'{"action_id": "x", "alert_id": "y", "stay_id": 1, "action": "ack", "by": "", "at": "2026-12-03T12:00:00"}',
        _action(raised, "ack", 2).model_copy(update={"alert_id": "no-such-alert"}),
        _action(raised, "ack", 3).model_copy(update={"stay_id": 2}),  # an alert of another stay
        _action(raised, "snooze", 4, reason="busy", snooze_minutes=500),
        _action(raised, "unsnooze", 5),
    ]
    sent = ward.run([ward.action(b) for b in bad])
    reasons = [DeadLetter.model_validate_json(v).reason for v in sent[topics.DEADLETTER]]
    assert len(reasons) == len(bad)
    for want, got in zip(["invalid alert action", "must name who acts", "unknown alert no-such-alert",
                          "unknown alert", "past the maximum of 240 min", "is not snoozed"], reasons):
        assert want in got
    assert all(DeadLetter.model_validate_json(v).topic == topics.ACTIONS for v in sent[topics.DEADLETTER])
    assert ward.r.hgetall(keys.alert_state(1)) == before
    assert _states(ward.audit(1)) == [("raised", "system")]


def test_a_cleared_alert_takes_comments_but_no_acknowledgement(pipeline_settings):
    ward = Ward(pipeline_settings)
    ward.run([ward.vitals(0, stays=(1,))] + [ward.vitals(m, stays=(1,), rr=16, spo2=97) for m in (30, 60, 90)])
    raised = ward.raised(1)
    assert ward.audit(1)[-1].state == "cleared"
    sent = ward.run([ward.action(_action(raised, "ack", 1)),
                     ward.action(_action(raised, "comment", 2, by="dr.lee", reason="reviewed, no action"))])
    assert "no longer open" in DeadLetter.model_validate_json(sent[topics.DEADLETTER][0]).reason
    note = ward.audit(1)[-1]
    assert (note.state, note.by, note.reason, note.episode_id) == ("commented", "dr.lee", "reviewed, no action",
                                                                   raised.alert_id)
