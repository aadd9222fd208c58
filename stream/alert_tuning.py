"""Tune a probability rule of the alert policy to an alert budget (`medm2t alerts calibrate`).

A validation source is replayed offline through the worker's own pipeline (stream/offline.py: the same
scoring points, the same scores as a live recorded replay). Then, for each candidate urgent threshold and
refractory period, the same alert engine (stream/alerts.py) steps over each stay's scores, and the same
figures as the live Quality page (stream/quality.py) are computed from its alert records and the outcomes.
The chosen candidate meets the budget (alerts per patient-day) and flags the most deaths at least 2 h ahead;
ties go to fewer alerts, then to the higher PPV.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from medm2t.events import Alert, Outcome, RiskScore
from stream.alerts import AlertRules, RuleState, advance
from stream.policy import AlertPolicy, RulePolicy, probability_tiers
from stream.quality import ScorerQuality, scorer_quality

REFRACTORY_MIN = (60.0, 120.0, 240.0, 480.0, 720.0)
THRESHOLD_QUANTILES = np.linspace(0.50, 0.995, 48)  # of all scored values: where the thresholds are tried
EMERGENCY_ABOVE = 0.15  # the emergency tier sits this far above the urgent one (it does not change the figures)


@dataclass(frozen=True)
class Candidate:
    urgent: float
    emergency: float
    refractory_min: float
    quality: ScorerQuality

    def key(self) -> tuple:
        """Larger is better: deaths flagged >= 2 h ahead, then fewer alerts, then PPV."""
        q = self.quality
        return (q.deaths_flagged_2h_count, -(q.alerts_per_patient_day or 0.0), q.ppv or 0.0)


def with_rule(policy: AlertPolicy, scorer: str, task: str, urgent: float, emergency: float,
              refractory_min: float) -> AlertPolicy:
    """`policy` with one probability rule replaced (hysteresis and clear timing as its current rule's)."""
    base = policy.rule(scorer, task)
    rule = RulePolicy(tiers=probability_tiers(urgent, emergency), clear_after=base.clear_after,
                      clear_hold_min=base.clear_hold_min, refractory_min=refractory_min)
    return policy.model_copy(update={"rules": {**policy.rules, f"{scorer}/{task}": rule}})


def alert_trails(policy: AlertPolicy, scores_by_stay: dict[int, Sequence[RiskScore]]) -> dict[int, list[Alert]]:
    """Each stay's alert records under `policy`, from its scores in point order (what the worker would raise:
    timers fire between scores; a stay's last score is its close, after which none fire)."""
    rules = AlertRules(policy)
    trails: dict[int, list[Alert]] = {}
    for stay_id, scores in scores_by_stay.items():
        states: dict[str, RuleState] = {}
        trail = trails[stay_id] = []
        for score in scores:
            for rule in rules.for_score(score):
                states[rule.key], records = advance(rule, states.get(rule.key, RuleState()), score, policy)
                trail += records
    return trails


def evaluate(policy: AlertPolicy, scorer: str, scores_by_stay, outcomes: Sequence[Outcome]) -> ScorerQuality:
    mine = {sid: [s for s in scores if s.scorer == scorer] for sid, scores in scores_by_stay.items()}
    return scorer_quality(scorer, outcomes, alert_trails(policy, mine))


def thresholds_to_try(scores_by_stay, scorer: str, task: str) -> list[float]:
    values = [s.tasks[task].value for scores in scores_by_stay.values() for s in scores
              if s.scorer == scorer and task in s.tasks]
    if not values:
        return []
    return sorted({round(float(x), 3) for x in np.quantile(values, THRESHOLD_QUANTILES) if 0.0 < x < 1.0})


def search(policy: AlertPolicy, scorer: str, task: str, scores_by_stay, outcomes: Sequence[Outcome],
           refractory_min: Iterable[float] = REFRACTORY_MIN,
           progress: Callable[[Iterable], Iterable] = lambda it: it) -> list[Candidate]:
    """Every candidate (urgent threshold x refractory period), evaluated on the validation stays."""
    grid = [(u, r) for u in thresholds_to_try(scores_by_stay, scorer, task) for r in refractory_min]
    out = []
    for urgent, refractory in progress(grid):
        emergency = round(max(urgent, min(urgent + EMERGENCY_ABOVE, 0.99)), 3)
        tuned = with_rule(policy, scorer, task, urgent, emergency, refractory)
        out.append(Candidate(urgent, emergency, refractory, evaluate(tuned, scorer, scores_by_stay, outcomes)))
    return out


def choose(candidates: Sequence[Candidate], budget: float) -> Candidate | None:
    """The best candidate within the budget, or None when none is."""
    feasible = [c for c in candidates if c.quality.alerts_per_patient_day is not None
                and c.quality.alerts_per_patient_day <= budget]
    return max(feasible, key=Candidate.key) if feasible else None
