"""The alert lifecycle as pure logic: escalation when nobody acknowledges, snoozes that end, and people's
actions (stream.alerts.step and act). The worker's handling of the same over Kafka and Redis is in
test_alert_actions.py."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from medm2t.events import AlertAction, RiskScore, TaskScore
from stream.scorers import news2
from stream.alerts import ActionRejected, AlertRules, RuleState, act, advance, next_timer, run_timers, step
from stream.policy import AlertPolicy

T0 = datetime(2150, 1, 1, 8, 0)
LIFE = AlertPolicy(escalate_after_min=15, snooze_max_min=240)
RULE = AlertRules(LIFE).rule("news2", "news2")  # the aggregate: urgent at 5, emergency at 7


def _score(aggregate: int, minutes: int) -> RiskScore:
    task = TaskScore(value=aggregate, kind="points", band="x", calibration=news2.CALIBRATION, detail={"max_single": 0})
    return RiskScore(score_id=f"s{minutes}", stay_id=1, subject_id=2, scorer="news2", model_version=news2.VERSION,
                     scored_at=T0 + timedelta(minutes=minutes), tasks={"news2": task})


def _action(kind: str, alert_id: str, n: int = 1, **kw) -> AlertAction:
    kw.setdefault("reason", "reviewed at the bedside" if kind in ("snooze", "comment") else None)
    return AlertAction(action_id=f"a{n}", alert_id=alert_id, stay_id=1, action=kind, by="nurse.kim",
                       at=datetime(2026, 12, 3, 12, 0), **kw)


class Timeline:
    """One rule stepped through scores (value, minute) with actions in between, as the worker does."""

    def __init__(self):
        self.state, self.records = RuleState(), []

    def score(self, value: int, minute: int):
        self.state, alert = step(RULE, RuleState.loads(self.state.dumps()), _score(value, minute), LIFE)
        if alert is not None:
            self.records.append(alert)
        return alert

    def act(self, action: AlertAction, minute: int):
        acted_on = next(a for a in self.records if a.alert_id == action.alert_id)
        self.state, record = act(self.state, action, acted_on, T0 + timedelta(minutes=minute), LIFE)
        self.records.append(record)
        return record

    def states(self):
        return [(a.state, a.level, a.escalation) for a in self.records]


def test_an_unacknowledged_urgent_alert_escalates_once_after_the_escalation_time():
    t = Timeline()
    raised = t.score(5, 0)
    assert t.score(5, 10) is None  # 10 min: not yet
    escalated = t.score(5, 15)
    assert (escalated.state, escalated.level, escalated.escalation) == ("not-acknowledged", "urgent", 1)
    assert "not acknowledged within 15 min" in escalated.reason
    assert t.score(5, 60) is None  # once per level
    assert escalated.episode_id == raised.alert_id == raised.episode_id
    assert escalated.score_id == "s15" and escalated.by == "system"


def test_an_acknowledged_alert_does_not_escalate_until_its_level_rises():
    t = Timeline()
    raised = t.score(5, 0)
    ack = t.act(_action("ack", raised.alert_id), 5)
    assert (ack.state, ack.acknowledged_by, ack.by, ack.episode_id) == ("acknowledged", "nurse.kim", "nurse.kim", raised.alert_id)
    assert ack.at == T0 + timedelta(minutes=5) and ack.wall_at == datetime(2026, 12, 3, 12, 0)
    assert t.score(5, 30) is None and t.score(5, 120) is None
    up = t.score(7, 130)  # emergency needs its own acknowledgement
    assert (up.state, up.level, up.acknowledged_by) == ("level-rose", "emergency", None)
    late = t.score(7, 145)
    assert (late.state, late.escalation) == ("not-acknowledged", 1)


def test_info_alerts_never_escalate():
    rule = AlertRules(LIFE).rule("news2", "news2:single-parameter")
    state = RuleState()
    out = []
    for minute in (0, 30, 60, 90):
        task = TaskScore(value=3, kind="points", band="x", calibration="", detail={"max_single": 3})
        score = RiskScore(stay_id=1, subject_id=2, scorer="news2", model_version="v", tasks={"news2": task},
                          scored_at=T0 + timedelta(minutes=minute))
        state, alert = step(rule, state, score, LIFE)
        out.append(alert and alert.state)
    assert out == ["raised", None, None, None]


def test_a_snooze_holds_escalation_and_the_alert_is_re_presented_when_it_ends():
    t = Timeline()
    raised = t.score(5, 0)
    snoozed = t.act(_action("snooze", raised.alert_id, snooze_minutes=30), 5)
    assert snoozed.snoozed_until == T0 + timedelta(minutes=35)
    assert "snoozed 30 min: reviewed at the bedside" in snoozed.reason
    assert t.score(5, 20) is None and t.score(5, 34) is None  # no escalation while snoozed
    back = t.score(5, 35)
    assert (back.state, back.snoozed_until, back.acknowledged_by) == ("re-presented", None, None)
    assert t.score(5, 45) is None
    assert t.score(5, 50).state == "not-acknowledged"  # 15 min after re-presentation, nobody acknowledged it


def test_a_higher_level_breaks_through_a_snooze():
    t = Timeline()
    raised = t.score(5, 0)
    t.act(_action("snooze", raised.alert_id, snooze_minutes=120), 1)
    up = t.score(7, 10)
    assert (up.state, up.level, up.snoozed_until) == ("level-rose", "emergency", None)


def test_unsnooze_restarts_the_escalation_clock():
    t = Timeline()
    raised = t.score(5, 0)
    t.act(_action("snooze", raised.alert_id, 1, snooze_minutes=60), 1)
    un = t.act(_action("unsnooze", raised.alert_id, 2), 20)
    assert (un.state, un.snoozed_until) == ("unsnoozed", None)
    assert t.score(5, 30) is None
    assert t.score(5, 35).state == "not-acknowledged"


def test_actions_that_cannot_apply_are_rejected_with_a_reason():
    t = Timeline()
    raised = t.score(5, 0)
    with pytest.raises(ActionRejected, match="past the maximum of 240 min"):
        t.act(_action("snooze", raised.alert_id, snooze_minutes=241), 1)
    with pytest.raises(ActionRejected, match="is not snoozed"):
        t.act(_action("unsnooze", raised.alert_id), 1)
    for v, m in ((3, 30), (3, 60), (3, 90)):
        t.score(v, m)
    assert t.records[-1].state == "cleared"
    with pytest.raises(ActionRejected, match="no longer open"):
        t.act(_action("ack", raised.alert_id, 5), 95)
    note = t.act(_action("comment", raised.alert_id, 6), 95)  # a note on a closed alert is still welcome
    assert (note.state, note.episode_id, note.reason) == ("commented", raised.alert_id, "reviewed at the bedside")


def test_an_action_on_an_earlier_alert_of_the_same_rule_is_rejected():
    t = Timeline()
    first = t.score(5, 0)
    for v, m in ((3, 30), (3, 60), (3, 90)):
        t.score(v, m)
    second = t.score(5, 200)
    assert second.state == "raised" and second.episode_id != first.episode_id
    with pytest.raises(ActionRejected, match="no longer open"):
        t.act(_action("ack", first.alert_id), 201)


def test_action_records_have_stable_ids_so_a_redelivered_action_is_recognised():
    t = Timeline()
    raised = t.score(5, 0)
    a = act(t.state, _action("ack", raised.alert_id, 7), raised, T0, LIFE)[1]
    b = act(t.state, _action("ack", raised.alert_id, 7), raised, T0, LIFE)[1]
    assert a.alert_id == b.alert_id and a.action_id == "a7"


@pytest.mark.parametrize("fields, message", [
    ({"by": "  "}, "must name who acts"),
    ({"action": "snooze", "snooze_minutes": 30, "reason": ""}, "needs a reason"),
    ({"action": "snooze", "reason": "x"}, "needs snooze_minutes"),
    ({"action": "ack", "snooze_minutes": 5}, "belongs to a snooze only"),
    ({"action": "comment"}, "needs a reason"),
    ({"action": "delete"}, "Input should be"),
])
def test_malformed_actions_fail_validation(fields, message):
    base = {"action_id": "a", "alert_id": "x", "stay_id": 1, "action": "ack", "by": "kim", "at": "2026-12-03T12:00:00"}
    with pytest.raises(ValidationError, match=message):
        AlertAction.model_validate({**base, **fields})


def test_rule_state_blobs_of_older_versions_still_load():
    old = '{"level": "urgent", "below": 1, "below_since": null, "cleared_at": null, "cleared_level": null}'
    state = RuleState.loads(old)
    assert (state.level, state.below, state.episode, state.acked_by) == ("urgent", 1, None, None)
    assert RuleState.loads(state.dumps()) == state


# ---- timers on the clinical clock ------------------------------------------------------------------------


def _fire_until(t: Timeline, minute: int) -> list:
    """What the worker does when the stay's clinical time passes `minute` with no score: fire due timers."""
    t.state, records = run_timers(RULE, t.state, 1, 2, lambda due: due <= T0 + timedelta(minutes=minute), LIFE)
    t.records += records
    return records


def test_an_emergency_with_no_score_after_it_escalates_at_its_own_deadline():
    t = Timeline()
    raised = t.score(7, 0)
    assert next_timer(RULE, t.state, LIFE) == T0 + timedelta(minutes=15)
    assert _fire_until(t, 14) == []
    escalated, = _fire_until(t, 60)  # clinical time passed 15 min long before the next score
    assert (escalated.state, escalated.level, escalated.escalation) == ("not-acknowledged", "emergency", 1)
    assert escalated.at == T0 + timedelta(minutes=15)
    assert escalated.value == 7 and escalated.score_id is None and escalated.episode_id == raised.alert_id
    assert "not acknowledged within 15 min of 08:00" in escalated.reason
    assert next_timer(RULE, t.state, LIFE) is None and _fire_until(t, 600) == []  # once per level


def test_a_snooze_ends_at_its_own_time_and_the_re_presented_alert_escalates_15_min_later():
    t = Timeline()
    raised = t.score(5, 0)
    t.act(_action("snooze", raised.alert_id, snooze_minutes=30), 5)
    back, escalated = _fire_until(t, 120)
    assert (back.state, back.at) == ("re-presented", T0 + timedelta(minutes=35))
    assert (escalated.state, escalated.at) == ("not-acknowledged", T0 + timedelta(minutes=50))


def test_advance_fires_the_timers_that_fell_before_a_score_at_their_own_time():
    t = Timeline()
    t.score(5, 0)
    t.state, records = advance(RULE, t.state, _score(5, 60), LIFE)
    assert [(a.state, a.at) for a in records] == [("not-acknowledged", T0 + timedelta(minutes=15))]


def test_a_resolving_alert_does_not_escalate_and_one_that_stands_again_does():
    t = Timeline()
    t.score(7, 0)
    assert t.score(6, 10) is None  # under the emergency threshold (7), above its clear_below (6): resolving
    assert RULE.resolving(t.state) and next_timer(RULE, t.state, LIFE) is None
    assert _fire_until(t, 60) == [] and t.score(6, 20) is None
    late = t.score(7, 40)  # the condition stands again after its deadline: escalates at once
    assert (late.state, late.at, late.escalation) == ("not-acknowledged", T0 + timedelta(minutes=40), 1)


def test_a_resolving_alert_clears_as_the_policy_says_without_escalating():
    t = Timeline()
    t.score(5, 0)
    for minute in (10, 40, 70):
        t.score(3, minute)
    assert [s for s, *_ in t.states()] == ["raised", "cleared"]
