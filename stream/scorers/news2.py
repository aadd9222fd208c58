"""NEWS2 (Royal College of Physicians, 2017) as a Scorer: the rule score clinicians know, shown beside MedM2T.

Each parameter uses its latest value within LOOKBACK of the stay's clock. A parameter without a value is
listed in `RiskScore.missing` and its sub-score is None: it is never counted as normal, so the aggregate is a
lower bound whenever something is missing (detail `complete` says which).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Sequence

from medm2t.cards import TaskCard
from medm2t.events import Measurement, RiskScore, StayOpened, TaskScore, _Event
from medm2t.vocabulary import NEWS2
from stream.scoring import Needs, StayPoint, StayView, score_views

NAME = NEWS2
# Its alert rules' keys: the aggregate, a 3 in any single parameter, and vitals too old to score (technical).
AGGREGATE, SINGLE_PARAMETER, STALE_VITALS = NAME, f"{NAME}:single-parameter", f"{NAME}:stale-vitals"
VERSION = "RCP 2017 NEWS2 (SpO2 scale 1)"
CALIBRATION = "rule score (RCP 2017 NEWS2), not a probability"
TASK_CARDS = (TaskCard(name=NAME, display="rule score, points", kind="points", alerts=True, board=True,
                       scale=(0, 20), bands=("low", "low-medium", "medium", "high")),)
LOOKBACK = timedelta(hours=24)
# The seven parameters, each with its name in words (RCP 2017's chart).
PARAMETER_WORDS = {"rr": "respiration rate", "spo2": "SpO2", "oxygen": "air or oxygen", "sbp": "systolic BP",
                   "hr": "pulse", "consciousness": "consciousness", "temp": "temperature"}
PARAMETERS = tuple(PARAMETER_WORDS)
MEDIUM_AT, HIGH_AT = 5, 7  # RCP 2017 response bands of the aggregate: medium (urgent response), high (emergency)

# (inclusive upper bound, points), checked in order; values are rounded to the chart's precision first.
_RR = ((8, 3), (11, 1), (20, 0), (24, 2), (math.inf, 3))
_SPO2 = ((91, 3), (93, 2), (95, 1), (math.inf, 0))
_SBP = ((90, 3), (100, 2), (110, 1), (219, 0), (math.inf, 3))
_HR = ((40, 3), (50, 1), (90, 0), (110, 1), (130, 2), (math.inf, 3))
_TEMP = ((35.0, 3), (36.0, 1), (38.0, 0), (39.0, 1), (math.inf, 2))


def _zero_points(table: tuple[tuple[float, int], ...], step: float) -> tuple[float, float]:
    """The charted values (to `step`) that score 0 points: (lowest, highest)."""
    lower = None
    for upper, points in table:
        if points == 0:
            return (0.0 if lower is None else round(lower + step, 1), upper)
        lower = upper
    raise AssertionError("every table has a 0-point band")


# Each parameter's 0-point range: what the dashboard shades as normal (SpO2 tops out at 100 %).
NORMAL_RANGES = {"rr": _zero_points(_RR, 1), "spo2": (_zero_points(_SPO2, 1)[0], 100.0), "sbp": _zero_points(_SBP, 1),
                 "hr": _zero_points(_HR, 1), "temp": _zero_points(_TEMP, 0.1)}


def _band(table: tuple[tuple[float, int], ...], value: float) -> int:
    for upper, points in table:
        if value <= upper:
            return points
    raise AssertionError("tables end with inf")


def _round_half_up(value: float, digits: int = 0) -> float:
    # Python's round() is banker's rounding; a chart value of 90.5 mmHg must not become 90.
    factor = 10 ** digits
    return math.floor(value * factor + 0.5) / factor


def rr_points(v: float) -> int:
    return _band(_RR, _round_half_up(v))


def spo2_points(v: float) -> int:
    return _band(_SPO2, _round_half_up(v))


def sbp_points(v: float) -> int:
    return _band(_SBP, _round_half_up(v))


def hr_points(v: float) -> int:
    return _band(_HR, _round_half_up(v))


def temp_points(v: float) -> int:
    return _band(_TEMP, _round_half_up(v, 1))


def on_oxygen(fio2: float) -> bool:
    """FiO2 arrives as a percent (21-100) or a fraction (<= 1.0); above room air (21 %) means supplemental O2."""
    percent = fio2 * 100.0 if fio2 <= 1.0 else fio2
    return percent > 21.0 + 1e-9


def oxygen_points(fio2: float) -> int:
    return 2 if on_oxygen(fio2) else 0


def consciousness_points(gcs_total: float) -> int:
    """GCS below 15 is taken as new confusion / not alert (the C of ACVPU)."""
    return 3 if gcs_total < 15 else 0


def response_band(aggregate: int, subscores: dict[str, int | None]) -> str:
    if aggregate >= HIGH_AT:
        return "high"
    if aggregate >= MEDIUM_AT:
        return "medium"
    if any(p == 3 for p in subscores.values() if p is not None):
        return "low-medium"
    return "low"


def _latest(view: StayView) -> dict[str, Measurement]:
    """Latest value-bearing measurement per concept within the lookback, by clinical time."""
    since = view.now - LOOKBACK
    latest: dict[str, Measurement] = {}
    for m in view.measurements:
        if m.concept is None or m.value is None or not math.isfinite(m.value) or m.time < since or m.time > view.now:
            continue
        prev = latest.get(m.concept)
        if prev is None or _newer(m, prev):
            latest[m.concept] = m
    return latest


def _gcs_total(latest: dict[str, Measurement]) -> float | None:
    """A charted total (PhysioNet `gcs`) or the sum of the latest eye/verbal/motor set (MIMIC), whichever is newer."""
    candidates = []
    if "gcs" in latest:
        candidates.append((latest["gcs"].time, latest["gcs"].value))
    parts = [latest.get(c) for c in ("gcs_eye", "gcs_verbal", "gcs_motor")]
    if all(p is not None for p in parts):
        candidates.append((min(p.time for p in parts), sum(p.value for p in parts)))
    return max(candidates, key=lambda c: c[0])[1] if candidates else None


def score_view(view: StayView, inputs_seen: int | None = None) -> RiskScore:
    latest = _latest(view)
    values: dict[str, float | None] = {
        "rr": latest["rr"].value if "rr" in latest else None,
        "spo2": latest["spo2"].value if "spo2" in latest else None,
        "oxygen": latest["fio2"].value if "fio2" in latest else None,
        "sbp": latest["sbp"].value if "sbp" in latest else None,
        "hr": latest["hr"].value if "hr" in latest else None,
        "consciousness": _gcs_total(latest),
        "temp": latest["temp"].value if "temp" in latest else None,
    }
    rules = {"rr": rr_points, "spo2": spo2_points, "oxygen": oxygen_points, "sbp": sbp_points, "hr": hr_points,
             "consciousness": consciousness_points, "temp": temp_points}
    subscores = {p: (rules[p](v) if v is not None else None) for p, v in values.items()}
    missing = tuple(p for p in PARAMETERS if subscores[p] is None)
    aggregate = sum(p for p in subscores.values() if p is not None)
    detail: dict[str, float | int | str | None] = {f"{p}_points": subscores[p] for p in PARAMETERS}
    detail["max_single"] = max((p for p in subscores.values() if p is not None), default=0)
    detail["complete"] = "yes" if not missing else "no: aggregate is a lower bound"
    vital_times = [m.time for m in latest.values()]
    # how old the newest vital sign is at this score: the stale-data technical alert reads it (stream/alerts.py)
    detail["newest_vital_age_h"] = round((view.now - max(vital_times)).total_seconds() / 3600, 3) if vital_times else None
    hours = None
    if view.opened is not None:
        hours = round((view.now - view.opened.time).total_seconds() / 3600.0, 3)
    task = TaskScore(value=float(aggregate), kind="points", band=response_band(aggregate, subscores),
                     calibration=CALIBRATION, detail=detail)
    return RiskScore(stay_id=view.stay_id, subject_id=view.subject_id, scorer=NAME, model_version=VERSION,
                     scored_at=view.now, hours_since_admission=hours, tasks={NAME: task},
                     inputs_seen=len(view.measurements) + len(view.ecgs) if inputs_seen is None else inputs_seen,
                     missing=missing)


@dataclass
class News2State:
    """Per bedside concept, the measurements that can still be its latest value: the newest charted by the
    last point, and any charted after it. Points only move forward, so nothing older can count again."""

    latest: dict[str, list[Measurement]] = field(default_factory=dict)
    opened: StayOpened | None = None


def _newer(a: Measurement, b: Measurement) -> bool:
    return (a.time, a.available_time, a.event_id) > (b.time, b.available_time, b.event_id)


class News2Scorer:
    name = NAME
    version = VERSION
    needs = Needs(lookback=LOOKBACK, ecgs=0, cadence=None, band_change_scores_all=True)

    def new_state(self) -> News2State:
        return News2State()

    def apply(self, state: News2State, events: Sequence[_Event]) -> None:
        for e in events:
            if isinstance(e, Measurement) and e.concept is not None and e.value is not None and math.isfinite(e.value):
                state.latest.setdefault(e.concept, []).append(e)
            elif isinstance(e, StayOpened):
                state.opened = e

    def score(self, items: Sequence[tuple[News2State, StayPoint]]) -> list[RiskScore]:
        out = []
        for state, point in items:
            since = point.at - LOOKBACK
            kept: list[Measurement] = []
            for concept, ms in state.latest.items():
                best = None
                later = []
                for m in ms:
                    if m.time > point.at:
                        later.append(m)
                    elif best is None or _newer(m, best):
                        best = m
                ms[:] = ([best] if best is not None and best.time >= since else []) + later
                kept += ms
            view = StayView(point.stay_id, point.subject_id, point.at, point.opened or state.opened, kept)
            out.append(score_view(view, point.inputs_seen))
        return out

    def score_batch(self, stays: Sequence[StayView]) -> list[RiskScore]:
        return score_views(self, stays)

    def card(self) -> dict:
        return {"name": "NEWS2", "version": VERSION, "order": 10, "tasks": [t.model_dump() for t in TASK_CARDS],
                "calibration": CALIBRATION, "lookback_hours": LOOKBACK / timedelta(hours=1),
                "parameters": list(PARAMETERS), "reference": "Royal College of Physicians. National Early Warning Score (NEWS) 2. 2017."}


# ---- alert signals (the rules' numbers are the alert policy's, stream/policy.py) -------------------------


def _news2_aggregate(score: RiskScore) -> float | None:
    task = score.tasks.get(NAME)
    return None if task is None else task.value


def _news2_max_single(score: RiskScore) -> float | None:
    task = score.tasks.get(NAME)
    if task is None:
        return None
    value = task.detail.get("max_single")
    return float(value) if isinstance(value, (int, float)) else None


def _news2_three_in(score: RiskScore, value: float) -> str:
    detail = score.tasks[NAME].detail
    params = [words for key, words in PARAMETER_WORDS.items() if detail.get(f"{key}_points") == 3]
    return f"NEWS2 single parameter {value:g} points" + (f" ({', '.join(params)})" if params else "")


def _newest_vital_age(score: RiskScore) -> float | None:
    task = score.tasks.get(NAME)
    value = None if task is None else task.detail.get("newest_vital_age_h")
    return float(value) if isinstance(value, (int, float)) else None


def _points(value: float) -> str:
    return f"{value:g} point" + ("" if value == 1 else "s")


# Each alert rule of NEWS2, by its key: the signal it reads from a score, its reason in words, and its
# signal's value with its unit.
ALERT_SIGNALS = {
    AGGREGATE: (_news2_aggregate, lambda s, v: f"NEWS2 {v:g} points ({s.tasks[NAME].band} band)", _points),
    SINGLE_PARAMETER: (_news2_max_single, _news2_three_in, _points),
    # Technical, not clinical: the NEWS2 above rests on vitals this old. Clears with the first fresh vital.
    STALE_VITALS: (_newest_vital_age,
                   lambda s, v: f"stale data: no vital signs for {v:.1f} h; NEWS2 rests on older values",
                   lambda v: f"{v:.1f} h"),
}
