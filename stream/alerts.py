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

The lifecycle (IHE ACM-like), all on the clinical clock:
  raised -> acknowledged: by a person; stops escalation at this level.
  -> not-acknowledged:    an urgent or emergency alert whose condition still stands (its latest signal at or
                          above its tier's threshold) and that nobody acknowledged within `escalate_after` of
                          its level beginning (once per level).
  -> level-rose:          the signal reached a higher level: it needs a new acknowledgement.
  -> resolving:           the latest signal is back under its tier's threshold, but the hysteresis has not
                          cleared the alert yet: it does not escalate meanwhile (`Rule.resolving`); if the
                          condition stands again after the deadline, it escalates at that score.
  -> snoozed (until T):   by a person with a reason, at most `snooze_max`; no escalation meanwhile. A higher
                          level breaks through; at T the alert is 're-presented' and must be acknowledged again.
  -> cleared:             by the hysteresis above.
Escalation and the end of a snooze are timers: `next_timer` says when one is due, and `tick` fires it at that
clinical time, whether or not a score came in between (the worker fires it once the stay's clinical time
has passed it; `advance` fires those that fell before a score, then steps the score).
Actions on an alert that has cleared are rejected (ActionRejected), except comments.

Every number here (tiers, hysteresis, refractory period, escalation and snooze times) comes from the alert
policy (stream/policy.py); `AlertRules(policy)` builds the rules. NEWS2 uses two rules (RCP 2017): the
aggregate (urgent, emergency) and a 3 in any single parameter (info), plus a stale-data technical alert (info)
when its newest vital sign is too old. Scores come with events, so a stay that receives no event at all is not
re-checked until its next one. Each probability task of any other scorer (MedM2T mortality) is one rule.

The per-(stay, rule) state is a small JSON blob the caller persists (Redis hash {stay:ID}:alertstate).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from typing import Callable

from medm2t.events import Alert, AlertAction, RiskScore, make_event_id
from medm2t.vocabulary import Level
from stream.policy import DEFAULT_POLICY, AlertPolicy, RulePolicy
from stream.scorers.rules import FIXED_RULES



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
    show: Callable[[float], str]                    # the signal's value with its unit: '6 points', '4.5 h', '23%'
    clear_after: int = 2                            # consecutive scores below clear_below before leaving a tier
    clear_hold: timedelta = timedelta(hours=1)      # ... spanning at least this much clinical time
    refractory: timedelta = timedelta(hours=1)      # after clearing, no new alert at or below the cleared level

    def raise_at(self, level: str) -> float:
        return next(t.raise_at for t in self.tiers if t.level == level)

    def resolving(self, state: RuleState) -> bool:
        """Open, but its latest signal is under its tier's threshold: waiting out the hysteresis."""
        return state.level is not None and state.value is not None and state.value < self.raise_at(state.level)

    def level_text(self, level: str | None, value: float) -> str:
        """A timer record's reason: no score came with it, so it states the latest one's value."""
        return f"still {level}, {self.show(value)} at the latest score"

    def target(self, value: float, current: str | None) -> str | None:
        """The level the signal asks for, honouring hysteresis on the current tier."""
        level = None
        for tier in self.tiers:
            if value >= tier.raise_at:
                level = tier.level
        if Level.rank_of(level) >= Level.rank_of(current):
            return level
        held = next(t for t in self.tiers if t.level == current)
        if value >= held.clear_below:
            return current
        for tier in reversed(self.tiers):  # the highest lower tier still held by its own hysteresis
            if Level.rank_of(tier.level) < Level.rank_of(current) and value >= tier.clear_below:
                return tier.level
        return None


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
    value: float | None = None           # the signal at the open alert's latest score (for timer records)
    version: str = ""                    # ... and that score's model version

    def dumps(self) -> str:
        """Compact JSON: only the fields that differ from a fresh state (loads fills in the rest)."""
        return json.dumps({f.name: v.isoformat() if isinstance(v, datetime) else v for f in fields(self)
                           if (v := getattr(self, f.name)) != f.default}, separators=(",", ":"))

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


def step(rule: Rule, state: RuleState, score: RiskScore, policy: AlertPolicy = DEFAULT_POLICY) -> tuple[RuleState, Alert | None]:
    """Advance one rule by one score. Returns the new state and the alert record to emit, if any."""
    value = rule.signal(score)
    if value is None:
        return state, None
    new, alert = _step(rule, state, score, value, policy)
    if new.level is not None:
        new = replace(new, value=value, version=score.model_version)
    return new, alert


def _step(rule: Rule, state: RuleState, score: RiskScore, value: float, policy: AlertPolicy):
    at = score.scored_at
    target = rule.target(value, state.level)
    if target is None and state.level is None and not state.below and state.snoozed_until is None:
        return state, None  # no alert open and none asked for, most scores of a ward: nothing changes
    if state.level is None and state.cleared_at is not None:
        if at - state.cleared_at < rule.refractory and Level.rank_of(target) <= Level.rank_of(state.cleared_level):
            return state, None  # refractory: the same alert again so soon is noise; a higher level breaks through
    if Level.rank_of(target) > Level.rank_of(state.level):
        if state.level is None:
            new = RuleState(target, since=at)
            return new, _record(rule, _moment(score), value, new, "raised", rule.describe(score, value))
        # A higher level needs its own acknowledgement, and breaks through a snooze.
        new = replace(state, level=target, below=0, below_since=None, since=at, acked_by=None, snoozed_until=None,
                      overdue=False)
        return new, _record(rule, _moment(score), value, new, "level-rose", rule.describe(score, value))
    if Level.rank_of(target) == Level.rank_of(state.level):
        return _timers(rule, replace(state, below=0, below_since=None), _moment(score), value, policy)
    below = state.below + 1
    since = state.below_since or at
    if below < rule.clear_after or at - since < rule.clear_hold:
        return _timers(rule, replace(state, below=below, below_since=since), _moment(score), value, policy)
    if target is None:
        reason = f"below threshold for {below} scores since {since:%Y-%m-%d %H:%M}: {rule.describe(score, value)}"
        return state.cleared(at), _record(rule, _moment(score), value, state, "cleared", reason)
    new = replace(state, level=target, below=0, below_since=None, since=at, overdue=False)
    return new, _record(rule, _moment(score), value, new, "de-escalated",
                        f"de-escalated from {state.level}: {rule.describe(score, value)}")


def _escalates(rule: Rule, state: RuleState, value: float | None) -> bool:
    """Open at an escalating level, its condition standing (`value`, the latest signal, at or above its
    tier's threshold), and nobody has acknowledged it or been told yet."""
    return (state.level is not None and Level(state.level).demands_response and state.acked_by is None
            and not state.overdue and state.since is not None
            and value is not None and value >= rule.raise_at(state.level))


def next_timer(rule: Rule, state: RuleState, policy: AlertPolicy = DEFAULT_POLICY) -> datetime | None:
    """The clinical time at which this rule's open alert changes by the clock alone: its snooze ends, or it
    escalates because nobody acknowledged it. None when no timer runs."""
    if state.level is None:
        return None
    if state.snoozed_until is not None:
        return state.snoozed_until
    return state.since + policy.escalate_after if _escalates(rule, state, state.value) else None


@dataclass(frozen=True)
class Moment:
    """Where an engine record is made: the stay, its clinical time, and the score behind it (none for a timer)."""
    stay_id: int
    subject_id: int
    at: datetime
    model_version: str
    score_id: str | None = None


def _moment(score: RiskScore) -> Moment:
    return Moment(score.stay_id, score.subject_id, score.scored_at, score.model_version, score.score_id or None)


def tick(rule: Rule, state: RuleState, stay_id: int, subject_id: int,
         policy: AlertPolicy = DEFAULT_POLICY) -> tuple[RuleState, Alert | None]:
    """Fire the rule's due timer (`next_timer`) at its own clinical time: no score came before it."""
    at = next_timer(rule, state, policy)
    if at is None:
        return state, None
    return _timers(rule, state, Moment(stay_id, subject_id, at, state.version), state.value or 0.0, policy)


def advance(rule: Rule, state: RuleState, score: RiskScore,
            policy: AlertPolicy = DEFAULT_POLICY) -> tuple[RuleState, list[Alert]]:
    """Fire the timers that fell before this score, then step the rule by it."""
    state, records = run_timers(rule, state, score.stay_id, score.subject_id, lambda due: due < score.scored_at,
                                policy)
    state, alert = step(rule, state, score, policy)
    return state, records + ([alert] if alert is not None else [])


def run_timers(rule: Rule, state: RuleState, stay_id: int, subject_id: int, passed: Callable[[datetime], bool],
               policy: AlertPolicy = DEFAULT_POLICY) -> tuple[RuleState, list[Alert]]:
    """Fire, in order, every timer whose clinical time has `passed` (a re-presented alert starts a new one)."""
    records = []
    while (due := next_timer(rule, state, policy)) is not None and passed(due):
        state, alert = tick(rule, state, stay_id, subject_id, policy)
        if alert is None:
            break
        records.append(alert)
    return state, records


def _timers(rule: Rule, state: RuleState, m: Moment, value: float,
            policy: AlertPolicy) -> tuple[RuleState, Alert | None]:
    """An open alert whose level holds: re-present it when its snooze ends, escalate it if its condition
    stands and nobody acknowledged it in time."""
    if state.snoozed_until is not None:
        if m.at < state.snoozed_until:
            return state, None
        new = replace(state, snoozed_until=None, since=m.at, acked_by=None, overdue=False)
        return new, _record(rule, m, value, new, "re-presented",
                            f"snooze ended at {state.snoozed_until:%H:%M}: {rule.level_text(new.level, value)}")
    if _escalates(rule, state, value) and m.at - state.since >= policy.escalate_after:
        new = replace(state, escalation=state.escalation + 1, overdue=True)
        return new, _record(rule, m, value, new, "not-acknowledged",
                            f"not acknowledged within {policy.escalate_after_min:g} min of {state.since:%H:%M}: "
                            f"{rule.level_text(new.level, value)}")
    return state, None


def _record(rule: Rule, m: Moment, value: float, state: RuleState, transition: str, reason: str) -> Alert:
    """The engine's record of a transition; `state` is the alert's state after it (before it, for a clear)."""
    alert_id = make_event_id("alert", m.stay_id, rule.scorer, rule.key, transition, state.level, m.at.isoformat())
    if state.episode is None:
        state.episode = alert_id
    return Alert(alert_id=alert_id, stay_id=m.stay_id, subject_id=m.subject_id, scorer=rule.scorer,
                 model_version=m.model_version, task=rule.key, level=state.level, state=transition, reason=reason,
                 value=value, at=m.at, wall_at=datetime.utcnow(), score_id=m.score_id, **_lifecycle_fields(state))


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
        policy: AlertPolicy = DEFAULT_POLICY) -> tuple[RuleState, Alert]:
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
        if length > policy.snooze_max:
            raise ActionRejected(f"a snooze of {action.snooze_minutes:g} min is past the maximum of "
                                 f"{policy.snooze_max_min:g} min")
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


def _probability(task: str) -> Callable[[RiskScore], float | None]:
    def signal(score: RiskScore) -> float | None:
        t = score.tasks.get(task)
        return None if t is None or t.kind != "probability" else t.value
    return signal


def _percent(value: float) -> str:
    return f"{value:.0%}"


def _describe_probability(task: str) -> Callable[[RiskScore, float], str]:
    def describe(s: RiskScore, v: float) -> str:
        drivers = s.tasks[task].detail.get("drivers")
        return (f"{task.replace('_', ' ')} risk {v:.0%} ({s.tasks[task].calibration})"
                + (f"; drivers: {drivers}" if drivers else ""))
    return describe


def signal_of(scorer: str, key: str) -> Callable[[RiskScore], float | None] | None:
    """The signal a rule reads from a score (the same whatever the policy's numbers); None for an unknown rule."""
    if scorer in FIXED_RULES:
        return FIXED_RULES[scorer][key][0] if key in FIXED_RULES[scorer] else None
    return _probability(key)


def make_rule(scorer: str, key: str, signal, describe, show, p: RulePolicy) -> Rule:
    return Rule(key, scorer, signal, tuple(Tier(t.level, t.raise_at, t.clear_below) for t in p.tiers), describe, show,
                p.clear_after, timedelta(minutes=p.clear_hold_min), timedelta(minutes=p.refractory_min))


class AlertRules:
    """A policy's rules, each built once: `for_score(score)` is what the engine steps for one score."""

    def __init__(self, policy: AlertPolicy = DEFAULT_POLICY):
        self.policy = policy
        self._rules: dict[tuple[str, str], Rule] = {}
        self._by_tasks: dict[tuple, tuple[Rule, ...]] = {}

    def rule(self, scorer: str, key: str) -> Rule:
        """One rule: a rule its scorer declares (FIXED_RULES, NEWS2's), else the probability task `key` of `scorer`."""
        if (scorer, key) not in self._rules:
            signal, describe, show = (FIXED_RULES[scorer][key] if scorer in FIXED_RULES
                                      else (_probability(key), _describe_probability(key), _percent))
            self._rules[scorer, key] = make_rule(scorer, key, signal, describe, show, self.policy.rule(scorer, key))
        return self._rules[scorer, key]

    def by_key(self, rule_key: str) -> Rule:
        """A rule by its SCORER/RULE key (the alert state hash's field)."""
        scorer, _, key = rule_key.partition("/")
        return self.rule(scorer, key)

    def for_score(self, score: RiskScore) -> tuple[Rule, ...]:
        keys = tuple(FIXED_RULES[score.scorer]) if score.scorer in FIXED_RULES else \
            tuple(name for name, t in score.tasks.items() if t.kind == "probability")
        if (score.scorer, keys) not in self._by_tasks:
            self._by_tasks[score.scorer, keys] = tuple(self.rule(score.scorer, k) for k in keys)
        return self._by_tasks[score.scorer, keys]
