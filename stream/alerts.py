"""Alert engine: turns score updates into an alert lifecycle (raised / escalated / de-escalated / cleared) per
stay and rule.

A `Rule` reads one signal from a RiskScore and maps it to a level through tiers with hysteresis: a tier is
entered at `raise_at` and only left once the signal stays below `clear_below` for `clear_after` consecutive
scores spanning at least `clear_hold` of clinical time, so a score flickering around a threshold does not
spam (counting scores alone would depend on how the worker happened to batch). Raising and escalating are immediate (no
confirmation delay on a deteriorating patient). After an alert clears, the rule stays quiet for `refractory` of
clinical time unless the signal reaches a higher level than the one that cleared: in the demo a stay cleared at
15:22 and was raised again at 15:23 (issue 9), 24 times within 2 h of clearing. A drop to a lower, still-active tier is reported as
`de-escalated` at the lower level.

NEWS2 uses two rules (RCP 2017): the aggregate (>= 5 urgent, >= 7 emergency) and a 3 in any single parameter
(info), plus a stale-data technical alert (info) when its newest vital sign is STALE_VITALS_HOURS old. Scores
come with events, so a stay that receives no event at all is not re-checked until its next one. MedM2T probability tasks plug in the same way: `probability_rules(task, ...)`.

The per-(stay, rule) state is a small JSON blob the caller persists (Redis hash {stay:ID}:alertstate).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable

from medm2t.events import Alert, RiskScore, make_event_id

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


@dataclass
class RuleState:
    level: str | None = None
    below: int = 0                      # consecutive scores asking for a lower level
    below_since: datetime | None = None  # clinical time of the first of them
    cleared_at: datetime | None = None   # when the last alert of this rule cleared (for the refractory period)
    cleared_level: str | None = None

    def dumps(self) -> str:
        return json.dumps({"level": self.level, "below": self.below, "below_since": _iso(self.below_since),
                           "cleared_at": _iso(self.cleared_at), "cleared_level": self.cleared_level})

    @classmethod
    def loads(cls, raw: str | bytes | None) -> RuleState:
        if not raw:
            return cls()
        d = json.loads(raw)  # blobs written before the refractory period lack its two fields
        return cls(level=d.get("level"), below=int(d.get("below", 0)), below_since=_time(d.get("below_since")),
                   cleared_at=_time(d.get("cleared_at")), cleared_level=d.get("cleared_level"))


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def _time(raw: str | None) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


def step(rule: Rule, state: RuleState, score: RiskScore) -> tuple[RuleState, Alert | None]:
    """Advance one rule by one score. Returns the new state and the alert to emit, if any."""
    value = rule.signal(score)
    if value is None:
        return state, None
    target = rule.target(value, state.level)
    if state.level is None and state.cleared_at is not None:
        if score.scored_at - state.cleared_at < rule.refractory and RANK[target] <= RANK[state.cleared_level]:
            return state, None  # refractory: the same alert again so soon is noise; a higher level breaks through
    if RANK[target] > RANK[state.level]:
        transition = "raised" if state.level is None else "escalated"
        return RuleState(target, 0), _alert(rule, score, value, target, transition, rule.describe(score, value))
    if RANK[target] == RANK[state.level]:
        return RuleState(state.level, 0, cleared_at=state.cleared_at, cleared_level=state.cleared_level), None
    below = state.below + 1
    since = state.below_since or score.scored_at
    if below < rule.clear_after or score.scored_at - since < rule.clear_hold:
        return RuleState(state.level, below, since), None
    if target is None:
        reason = f"below threshold for {below} scores since {since:%Y-%m-%d %H:%M}: {rule.describe(score, value)}"
        return (RuleState(None, 0, cleared_at=score.scored_at, cleared_level=state.level),
                _alert(rule, score, value, state.level, "cleared", reason))
    reason = f"de-escalated from {state.level}: {rule.describe(score, value)}"
    return RuleState(target, 0), _alert(rule, score, value, target, "de-escalated", reason)


def _alert(rule: Rule, score: RiskScore, value: float, level: str, transition: str, reason: str) -> Alert:
    at = score.scored_at
    return Alert(alert_id=make_event_id("alert", score.stay_id, rule.scorer, rule.key, transition, level, at.isoformat()),
                 stay_id=score.stay_id, subject_id=score.subject_id, scorer=rule.scorer, model_version=score.model_version,
                 task=rule.key, level=level, state=transition, reason=reason, value=value, at=at)


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
