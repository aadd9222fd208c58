"""Alert engine: turns score updates into an alert lifecycle per stay and rule, and applies what people do
with the alerts (acknowledge, snooze, unsnooze, comment). Every change is one `Alert` record; a stay's records
in order are its audit trail.

A `Rule` reads one signal from a RiskScore and maps it to a level through tiers with hysteresis: a tier is
entered at `raise_at` and only left once the signal stays below `clear_below` for `clear_after` consecutive
scores spanning at least `clear_hold` of clinical time, so a score flickering around a threshold does not
spam (counting scores alone would depend on how the worker happened to batch). Raising and escalating are
immediate (no confirmation delay on a deteriorating patient). After an alert clears, the rule stays quiet for
`refractory` of clinical time unless the signal reaches a higher level than the one that cleared: in the demo
a stay cleared at 15:22 and was raised again at 15:23 (issue 9). A drop to a lower, still-active tier is
reported as `de-escalated` at the lower level.

The lifecycle (`Lifecycle`, IHE ACM-like), all on the clinical clock, checked at each score of the stay:
  raised -> acknowledged: by a person; stops escalation at this level.
  raised -> escalated:    an urgent or emergency alert nobody acknowledged within `escalate_after` (once
                          per level); a rise in level is also 'escalated', and needs a new acknowledgement.
  -> snoozed (until T):   by a person with a reason, at most `snooze_max`; no escalation meanwhile. A higher
                          level breaks through; at T the alert is 're-presented' and must be acknowledged again.
  -> cleared:             by the hysteresis above.
Actions on an alert that has cleared are rejected (ActionRejected), except comments.

NEWS2 uses two rules (RCP 2017): the aggregate (>= 5 urgent, >= 7 emergency) and a 3 in any single parameter
(info), plus a stale-data technical alert (info) when its newest vital sign is STALE_VITALS_HOURS old. Scores
come with events, so a stay that receives no event at all is not re-checked until its next one. MedM2T probability tasks plug in the same way: `probability_rules(task, ...)`.

The per-(stay, rule) state is a small JSON blob the caller persists (Redis hash {stay:ID}:alertstate).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Callable

from medm2t.events import Alert, AlertAction, RiskScore, make_event_id

LEVELS = ("info", "urgent", "emergency")
RANK = {None: 0, "info": 1, "urgent": 2, "emergency": 3}


@dataclass(frozen=True)
class Tier:
    level: str
    raise_at: float      # enter this tier when signal >= raise_at
    clear_below: float   # leave it once signal < clear_below (clear_below <= raise_at: the hysteresis gap)


@dataclass(frozen=True)
class Rule:
    key: str                                        # unique per scorer, e.g. "news2" or "mortality"
    scorer: str
    signal: Callable[[RiskScore], float | None]
    tiers: tuple[Tier, ...]                         # ascending severity
    describe: Callable[[RiskScore, float], str]
    clear_after: int = 2                            # consecutive scores below clear_below before leaving a tier
    clear_hold: timedelta = timedelta(hours=1)      # ... spanning at least this much clinical time
    refractory: timedelta = timedelta(hours=1)      # after clearing, no new alert at or below the cleared level

    def target(self, value: float, current: str | None) -> str | None:
        """The level the signal asks for, honouring hysteresis on the current tier."""
        level = None
        for tier in self.tiers:
            if value >= tier.raise_at:
                level = tier.level
        if RANK[level] >= RANK[current]:
            return level
        held = next(t for t in self.tiers if t.level == current)
        if value >= held.clear_below:
            return current
        for tier in reversed(self.tiers):  # the highest lower tier still held by its own hysteresis
            if RANK[tier.level] < RANK[current] and value >= tier.clear_below:
                return tier.level
        return None


@dataclass(frozen=True)
class Lifecycle:
    """What happens to an open alert when nobody acts on it, and the bounds on what people may do. Clinical
    time throughout, so a replay at any speed behaves as the ward would."""
    escalate_after: timedelta = timedelta(minutes=15)  # an urgent or emergency alert nobody acknowledged escalates
    snooze_max: timedelta = timedelta(hours=4)


ESCALATING = ("urgent", "emergency")


@dataclass
class RuleState:
    level: str | None = None
    below: int = 0                       # consecutive scores asking for a lower level
    below_since: datetime | None = None  # clinical time of the first of them
    cleared_at: datetime | None = None   # when the last alert of this rule cleared (for the refractory period)
    cleared_level: str | None = None
    # The open alert's lifecycle:
    episode: str | None = None           # alert_id of the record that raised it
    since: datetime | None = None        # when its current level began or it was re-presented: the escalation clock
    acked_by: str | None = None          # who acknowledged it at its current level
    snoozed_until: datetime | None = None
    escalation: int = 0                  # times it escalated because nobody acknowledged it
    overdue: bool = False                # escalated for that since `since`

    def dumps(self) -> str:
        return json.dumps({k: v.isoformat() if isinstance(v, datetime) else v for k, v in asdict(self).items()})

    @classmethod
    def loads(cls, raw: str | bytes | None) -> RuleState:
        if not raw:
            return cls()
        d = json.loads(raw)  # blobs written by older versions lack the later fields: they take the defaults
        times = {"below_since", "cleared_at", "since", "snoozed_until"}
        return cls(**{f.name: (_time(d[f.name]) if f.name in times else d[f.name]) for f in fields(cls) if f.name in d})

    def cleared(self, at: datetime) -> RuleState:
        return RuleState(cleared_at=at, cleared_level=self.level)


def _time(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


def step(rule: Rule, state: RuleState, score: RiskScore, life: Lifecycle = Lifecycle()) -> tuple[RuleState, Alert | None]:
    """Advance one rule by one score. Returns the new state and the alert record to emit, if any."""
    value = rule.signal(score)
    if value is None:
        return state, None
    at = score.scored_at
    target = rule.target(value, state.level)
    if state.level is None and state.cleared_at is not None:
        if at - state.cleared_at < rule.refractory and RANK[target] <= RANK[state.cleared_level]:
            return state, None  # refractory: the same alert again so soon is noise; a higher level breaks through
    if RANK[target] > RANK[state.level]:
        if state.level is None:
            new = RuleState(target, since=at)
            return new, _record(rule, score, value, new, "raised", rule.describe(score, value))
        # A higher level needs its own acknowledgement, and breaks through a snooze.
        new = replace(state, level=target, below=0, below_since=None, since=at, acked_by=None, snoozed_until=None,
                      overdue=False)
        return new, _record(rule, score, value, new, "escalated", rule.describe(score, value))
    if RANK[target] == RANK[state.level]:
        return _timers(rule, replace(state, below=0, below_since=None), score, value, life)
    below = state.below + 1
    since = state.below_since or at
    if below < rule.clear_after or at - since < rule.clear_hold:
        return _timers(rule, replace(state, below=below, below_since=since), score, value, life)
    if target is None:
        reason = f"below threshold for {below} scores since {since:%Y-%m-%d %H:%M}: {rule.describe(score, value)}"
        return state.cleared(at), _record(rule, score, value, state, "cleared", reason)
    new = replace(state, level=target, below=0, below_since=None, since=at, overdue=False)
    return new, _record(rule, score, value, new, "de-escalated", f"de-escalated from {state.level}: {rule.describe(score, value)}")


def _timers(rule: Rule, state: RuleState, score: RiskScore, value: float, life: Lifecycle) -> tuple[RuleState, Alert | None]:
    """An open alert whose level holds: re-present it when its snooze ends, escalate it if nobody acknowledged it."""
    at = score.scored_at
    if state.snoozed_until is not None:
        if at < state.snoozed_until:
            return state, None
        new = replace(state, snoozed_until=None, since=at, acked_by=None, overdue=False)
        return new, _record(rule, score, value, new, "re-presented", f"snooze ended: {rule.describe(score, value)}")
    if (state.level in ESCALATING and state.acked_by is None and not state.overdue and state.since is not None
            and at - state.since >= life.escalate_after):
        new = replace(state, escalation=state.escalation + 1, overdue=True)
        minutes = life.escalate_after.total_seconds() / 60
        return new, _record(rule, score, value, new, "escalated",
                            f"not acknowledged within {minutes:g} min: {rule.describe(score, value)}")
    return state, None


def _record(rule: Rule, score: RiskScore, value: float, state: RuleState, transition: str, reason: str) -> Alert:
    """The engine's record of a transition; `state` is the alert's state after it (before it, for a clear)."""
    at = score.scored_at
    alert_id = make_event_id("alert", score.stay_id, rule.scorer, rule.key, transition, state.level, at.isoformat())
    if state.episode is None:
        state.episode = alert_id
    return Alert(alert_id=alert_id, stay_id=score.stay_id, subject_id=score.subject_id, scorer=rule.scorer,
                 model_version=score.model_version, task=rule.key, level=state.level, state=transition, reason=reason,
                 value=value, at=at, wall_at=datetime.utcnow(), score_id=score.score_id or None,
                 **_lifecycle_fields(state))


def _lifecycle_fields(state: RuleState) -> dict:
    return {"episode_id": state.episode, "escalation": state.escalation, "acknowledged_by": state.acked_by,
            "snoozed_until": state.snoozed_until}


# ---- people acting on alerts ----------------------------------------------------------------------------


def action_record_id(action_id: str) -> str:
    """The alert_id of the record an action makes: the same action redelivered makes the same record."""
    return make_event_id("alert-action", action_id)


class ActionRejected(ValueError):
    """An action that cannot apply: its reason goes to the dead-letter topic."""


def act(state: RuleState, action: AlertAction, acted_on: Alert, now: datetime,
        life: Lifecycle = Lifecycle()) -> tuple[RuleState, Alert]:
    """Apply one person's action on the alert `acted_on` (any record of it), at clinical time `now`. Returns the
    rule's new state and the record of the action. Raises ActionRejected."""
    open_now = state.level is not None and state.episode == acted_on.episode_id
    if action.action == "comment":
        new, transition, reason = state, "commented", action.reason.strip()
    elif not open_now:
        raise ActionRejected(f"alert {action.alert_id} is no longer open (it cleared or was replaced); "
                             f"only a comment can be added to it")
    elif action.action == "ack":
        new, transition, reason = replace(state, acked_by=action.by), "acknowledged", action.reason or "acknowledged"
    elif action.action == "snooze":
        length = timedelta(minutes=action.snooze_minutes)
        if length > life.snooze_max:
            raise ActionRejected(f"a snooze of {action.snooze_minutes:g} min is past the maximum of "
                                 f"{life.snooze_max.total_seconds() / 60:g} min")
        new = replace(state, snoozed_until=now + length)
        transition, reason = "snoozed", f"snoozed {action.snooze_minutes:g} min: {action.reason.strip()}"
    else:  # unsnooze
        if state.snoozed_until is None:
            raise ActionRejected(f"alert {action.alert_id} is not snoozed")
        new, transition, reason = replace(state, snoozed_until=None, since=now, overdue=False), "unsnoozed", action.reason or "unsnoozed"
    lifecycle = _lifecycle_fields(new) if open_now else {"episode_id": acted_on.episode_id, "escalation": acted_on.escalation,
                                                          "acknowledged_by": acted_on.acknowledged_by, "snoozed_until": None}
    record = Alert(alert_id=action_record_id(action.action_id), stay_id=acted_on.stay_id,
                   subject_id=acted_on.subject_id, scorer=acted_on.scorer, model_version=acted_on.model_version,
                   task=acted_on.task, level=new.level if open_now else acted_on.level, state=transition, reason=reason,
                   value=acted_on.value, at=now, by=action.by, wall_at=action.at, action_id=action.action_id,
                   **lifecycle)
    return new, record


# ---- NEWS2 ---------------------------------------------------------------------------------------------


def _news2_aggregate(score: RiskScore) -> float | None:
    task = score.tasks.get("news2")
    return None if task is None else task.value


def _news2_max_single(score: RiskScore) -> float | None:
    task = score.tasks.get("news2")
    if task is None:
        return None
    value = task.detail.get("max_single")
    return float(value) if isinstance(value, (int, float)) else None


def _news2_three_in(score: RiskScore, value: float) -> str:
    params = [k.removesuffix("_points") for k, v in score.tasks["news2"].detail.items() if k.endswith("_points") and v == 3]
    return f"NEWS2 single parameter max {value:g}" + (f" ({', '.join(params)})" if params else "")


def _newest_vital_age(score: RiskScore) -> float | None:
    task = score.tasks.get("news2")
    value = None if task is None else task.detail.get("newest_vital_age_h")
    return float(value) if isinstance(value, (int, float)) else None


STALE_VITALS_HOURS = 2.0  # no vital sign for this long while the stay is scored: a stale-data technical alert

NEWS2_RULES = (
    Rule("news2", "news2", _news2_aggregate,
         (Tier("urgent", 5, 4), Tier("emergency", 7, 6)),
         lambda s, v: f"NEWS2 aggregate {v:g} (band {s.tasks['news2'].band})"),
    Rule("news2:single-parameter", "news2", _news2_max_single,
         (Tier("info", 3, 3),),
         _news2_three_in),
    # Technical, not clinical: the NEWS2 above rests on vitals this old. Clears with the first fresh vital.
    Rule("news2:stale-vitals", "news2", _newest_vital_age,
         (Tier("info", STALE_VITALS_HOURS, STALE_VITALS_HOURS),),
         lambda s, v: f"stale data: no vital signs for {v:.1f} h; NEWS2 rests on older values",
         clear_after=1, clear_hold=timedelta(0), refractory=timedelta(0)),
)


def probability_rules(task: str, scorer: str = "medm2t", urgent: float = 0.3, emergency: float = 0.5,
                      gap: float = 0.05, clear_after: int = 2, clear_hold: timedelta = timedelta(hours=1)) -> Rule:
    """A rule for one probability task (e.g. MedM2T mortality): raise at the threshold, clear `gap` below it."""
    def signal(score: RiskScore) -> float | None:
        t = score.tasks.get(task)
        return None if t is None or t.kind != "probability" else t.value

    return Rule(task, scorer, signal, (Tier("urgent", urgent, urgent - gap), Tier("emergency", emergency, emergency - gap)),
                lambda s, v: f"{task} probability {v:.2f} ({s.tasks[task].calibration})", clear_after, clear_hold)


def rules_for(score: RiskScore) -> tuple[Rule, ...]:
    """The rules that apply to one scorer's scores."""
    if score.scorer == "news2":
        return NEWS2_RULES
    return tuple(probability_rules(name, score.scorer) for name, t in score.tasks.items() if t.kind == "probability")
