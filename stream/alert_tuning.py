"""Tune a probability rule of the alert policy to an alert budget (`medm2t alerts calibrate`).

A validation source is replayed offline through the worker's own pipeline (stream/offline.py: the same
scoring points, the same scores as a live recorded replay). Then, for each candidate urgent threshold and
refractory period, the same alert engine (stream/alerts.py) steps over each stay's scores, and the same
figures as the live Quality page (stream/quality.py) are computed from its alert records and the outcomes.
The chosen candidate is the one a ward can carry: within the budget (alerts per patient-day), it flags at least
the target share of deaths at least 2 h ahead, and among those it alerts the fewest stays (then the higher
PPV, then fewer alerts). When no candidate reaches the target within the budget, the one that flags the most
deaths does, and `Choice.reached` says so. `tradeoff` is the curve behind the choice: for each share of
deaths flagged, the fewest stays alerted and alerts per patient-day that reach it.
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

    def flagged(self) -> float:
        """Share of deaths flagged >= 2 h ahead (1.0 when there are no deaths: nothing to miss)."""
        q = self.quality
        return 1.0 if not q.deaths else q.deaths_flagged_2h_count / q.deaths

    def load(self) -> tuple:
        """Smaller is lighter for the ward: fewer stays alerted, then higher PPV, then fewer alerts."""
        q = self.quality
        return (q.stays_alerted or 0.0, -(q.ppv or 0.0), q.alerts_per_patient_day or 0.0)


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


@dataclass(frozen=True)
class Choice:
    candidate: Candidate
    reached: bool   # it flags at least the target share of deaths


def choose(candidates: Sequence[Candidate], budget: float, target: float = 0.8) -> Choice | None:
    """Within the budget: the lightest candidate that flags at least `target` of the deaths >= 2 h ahead, else
    the one that flags the most (then the lightest). None when no candidate is within the budget."""
    feasible = [c for c in candidates if c.quality.alerts_per_patient_day is not None
                and c.quality.alerts_per_patient_day <= budget]
    if not feasible:
        return None
    reaching = [c for c in feasible if c.flagged() >= target - 1e-9]
    if reaching:
        return Choice(min(reaching, key=Candidate.load), True)
    most = max(c.flagged() for c in feasible)
    return Choice(min((c for c in feasible if c.flagged() == most), key=Candidate.load), False)


def tradeoff(candidates: Sequence[Candidate]) -> list[dict]:
    """For each share of deaths flagged >= 2 h ahead that some candidate reaches, the lightest candidate that
    reaches it: the curve of deaths flagged against stays alerted and alerts per patient-day."""
    curve = []
    for share in sorted({round(c.flagged(), 4) for c in candidates}):
        best = min((c for c in candidates if c.flagged() >= share - 1e-9), key=Candidate.load)
        q = best.quality
        curve.append({"deaths_flagged_2h": share, "stays_alerted": q.stays_alerted,
                      "alerts_per_patient_day": q.alerts_per_patient_day, "ppv": q.ppv, "urgent": best.urgent,
                      "refractory_min": best.refractory_min})
    return curve
