"""The alert policy: every number the alert engine (stream/alerts.py) acts on, as one typed object.

Tiers per scorer and rule (with their hysteresis), how many scores and how much clinical time a clear needs,
the refractory period after a clear, and the lifecycle times (escalation, longest snooze). The worker loads it
(`load_policy`), runs it in the pipeline and publishes it to Redis beside the model cards (keys.ALERT_POLICY);
the dashboard draws its thresholds from there. `medm2t alerts calibrate` tunes the MedM2T tiers and the
refractory period to an alert budget and writes the result next to the checkpoint (POLICY_FILE).

Rule keys are `SCORER/RULE`, as in the alert state hash. NEWS2's rules and their signals are fixed in code
(stream/alerts.py); a probability task of any scorer (MedM2T mortality, or a third scorer's) takes its own
entry when the policy has one, else `probability_default`.
"""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Iterable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medm2t.vocabulary import MEDM2T, NEWS2, Level
from stream import keys
from stream.scorers.news2 import AGGREGATE, HIGH_AT, MEDIUM_AT, SINGLE_PARAMETER, STALE_VITALS
from stream.scorers.rules import FIXED_RULES

POLICY_FILE = "alert-policy.json"  # in a checkpoint folder: the policy `alerts calibrate` tuned for that model


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TierPolicy(_Frozen):
    level: Level
    raise_at: float = Field(description="Enter this tier when the signal is at or above this.")
    clear_below: float = Field(description="Leave it once the signal is below this (<= raise_at: the hysteresis).")

    @model_validator(mode="after")
    def _hysteresis(self):
        if self.clear_below > self.raise_at:
            raise ValueError(f"{self.level}: clear_below {self.clear_below:g} is above raise_at {self.raise_at:g}")
        return self


class RulePolicy(_Frozen):
    tiers: tuple[TierPolicy, ...] = Field(min_length=1, description="Ascending severity and threshold.")
    clear_after: int = Field(2, ge=1, description="Consecutive scores below clear_below before a tier is left.")
    clear_hold_min: float = Field(60.0, ge=0, description="... spanning at least this many clinical minutes.")
    refractory_min: float = Field(60.0, ge=0, description="After a clear, no new alert at or below the cleared "
                                                          "level for this many clinical minutes.")

    @model_validator(mode="after")
    def _ascending(self):
        levels = [t.level.rank for t in self.tiers]
        if levels != sorted(set(levels)) or [t.raise_at for t in self.tiers] != sorted(t.raise_at for t in self.tiers):
            raise ValueError("tiers must rise in level and in raise_at, one per level")
        return self

    def raise_at(self, level: str) -> float | None:
        return next((t.raise_at for t in self.tiers if t.level == level), None)


def probability_tiers(urgent: float, emergency: float, gap: float = 0.05) -> tuple[TierPolicy, ...]:
    """Urgent and emergency tiers on a probability, each clearing `gap` below its threshold (at most half of it)."""
    return tuple(TierPolicy(level=level, raise_at=x, clear_below=round(x - min(gap, x / 2), 6))
                 for level, x in ((Level.URGENT, urgent), (Level.EMERGENCY, emergency)))


class AlertPolicy(_Frozen):
    """What raises, clears, re-raises and escalates an alert. Defaults: RCP 2017 for NEWS2, 0.30 / 0.50 on
    MedM2T's mortality probability (uncalibrated defaults until `medm2t alerts calibrate` tunes them)."""

    name: str = Field("default", description="Where the policy comes from (shown on the dashboard).")
    escalate_after_min: float = Field(15.0, gt=0, description="An urgent or emergency alert nobody acknowledged "
                                                              "escalates after this many clinical minutes.")
    snooze_max_min: float = Field(240.0, gt=0, description="Longest snooze allowed, in clinical minutes.")
    rules: dict[str, RulePolicy] = Field(default_factory=lambda: dict(DEFAULT_RULES))
    probability_default: RulePolicy = Field(
        default_factory=lambda: RulePolicy(tiers=probability_tiers(0.30, 0.50)),
        description="For a probability task without its own entry in `rules`.")
    tuned: dict | None = Field(None, description="How `alerts calibrate` chose it: data, budget, figures.")

    @model_validator(mode="after")
    def _known_rules(self):
        for key in self.rules:
            scorer, _, rule = key.partition("/")
            if not scorer or not rule:
                raise ValueError(f"rule key {key!r} is not SCORER/RULE")
            if scorer in FIXED_RULES and rule not in FIXED_RULES[scorer]:
                known = ", ".join(f"{scorer}/{k}" for k in sorted(FIXED_RULES[scorer]))
                raise ValueError(f"unknown {scorer.upper()} rule {key!r} (known: {known})")
        return self

    def rule(self, scorer: str, key: str) -> RulePolicy:
        """The policy of one rule; a probability task without an entry takes probability_default."""
        return self.rules.get(f"{scorer}/{key}") or (DEFAULT_RULES.get(f"{scorer}/{key}") if scorer in FIXED_RULES
                                                    else self.probability_default)

    def thresholds(self, scorer: str, key: str) -> dict[str, float]:
        """{level: raise_at} of one rule, for the charts."""
        return {t.level: t.raise_at for t in self.rule(scorer, key).tiers}

    @property
    def escalate_after(self) -> timedelta:
        return timedelta(minutes=self.escalate_after_min)

    @property
    def snooze_max(self) -> timedelta:
        return timedelta(minutes=self.snooze_max_min)


DEFAULT_RULES: dict[str, RulePolicy] = {
    # RCP 2017: an aggregate of 5-6 (medium) calls for an urgent response, 7+ (high) for an emergency one.
    f"{NEWS2}/{AGGREGATE}": RulePolicy(tiers=(
        TierPolicy(level=Level.URGENT, raise_at=MEDIUM_AT, clear_below=MEDIUM_AT - 1),
        TierPolicy(level=Level.EMERGENCY, raise_at=HIGH_AT, clear_below=HIGH_AT - 1))),
    # a 3 in any single parameter: info ('low-medium' band)
    f"{NEWS2}/{SINGLE_PARAMETER}": RulePolicy(tiers=(TierPolicy(level=Level.INFO, raise_at=3, clear_below=3),)),
    # technical: the newest vital sign is this many hours old; clears with the first fresh vital
    f"{NEWS2}/{STALE_VITALS}": RulePolicy(tiers=(TierPolicy(level=Level.INFO, raise_at=2.0, clear_below=2.0),),
                                       clear_after=1, clear_hold_min=0, refractory_min=0),
}
DEFAULT_POLICY = AlertPolicy()


class PolicyError(ValueError):
    """A policy file that cannot be read: the message says which file and why."""


def read_policy(path: Path) -> AlertPolicy:
    try:
        return AlertPolicy.model_validate_json(path.read_text())
    except OSError as e:
        raise PolicyError(f"cannot read alert policy {path}: {e.strerror}") from None
    except ValidationError as e:
        raise PolicyError(f"alert policy {path} is not valid: {e.errors()[0]['loc']}: {e.errors()[0]['msg']}") from None


def load_policy(settings, scorers: Iterable[str] = ()) -> AlertPolicy:
    """The policy the worker runs: MEDM2T_ALERT_POLICY if set, else the checkpoint's POLICY_FILE when MedM2T
    is among `scorers` and its checkpoint has one, else the defaults. Lifecycle times set explicitly in the
    settings (MEDM2T_ESCALATE_AFTER_MIN, MEDM2T_SNOOZE_MAX_MIN) win over the file's. Raises PolicyError."""
    path = settings.alert_policy
    if path is None and MEDM2T in scorers:
        candidate = Path(settings.checkpoint) / POLICY_FILE
        path = candidate if candidate.exists() else None
    policy = read_policy(path) if path is not None else DEFAULT_POLICY
    overrides = {f: value for f in ("escalate_after_min", "snooze_max_min") if (value := getattr(settings, f)) is not None}
    return policy.model_copy(update=overrides) if overrides else policy


def published(redis) -> AlertPolicy | None:
    """The policy the workers published to Redis (a sync client), or None when there is none or it is invalid."""
    raw = redis.get(keys.ALERT_POLICY)
    try:
        return AlertPolicy.model_validate_json(raw) if raw else None
    except ValidationError:
        return None


def dumps(policy: AlertPolicy) -> str:
    return json.dumps(policy.model_dump(mode="json"), indent=2)
