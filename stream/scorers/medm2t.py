"""MedM2T behind the worker's Scorer protocol (stream/scoring.py): one RiskScore per point, never NaN, never
raising on sparse or odd data.

The per-stay state is the model's incremental encoder state (model/incremental.py): `apply` adds one point's
events in O(new events), and `score` runs the rest of the network for many stays in one batched pass. That
equals a full recompute from the stay's events (tests/model/test_model_streaming.py). Before the stay's StayOpened
has arrived the state only holds its events, and such a stay is scored by a full recompute of them.

Each mortality score carries its top drivers in clinical words ("lactate 4.1 mmol/L, rising (+0.42)") in
`detail["drivers"]`, and the deep network's share in `detail["deep_log_odds"]`: model/explain.py says what
the figures are (exact for the linear wide head; the deep part is one number).

A stay whose events cannot be featurised is scored on its static features from then on, and says so.
Published values are rounded (probabilities to 1e-4, days to 1e-3): batched float32 inference differs in
the last bits with the batch's shape, and those digits carry no information.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Sequence

import numpy as np

from medm2t.cards import TaskCard
from medm2t.events import PUBLISHED_DIGITS, Measurement, RiskScore, StayOpened, TaskScore, _Event
from medm2t.vocabulary import CVD_90D, LOS_REMAINING, MEDM2T, MORTALITY, TASKS
from model.explain import FREQUENCY
from stream import metrics
from stream.scoring import Needs, StayPoint, StayView, score_views

TASK_CARDS = (
    TaskCard(name=MORTALITY, display="in-hospital mortality risk", kind="probability", alerts=True, board=True),
    TaskCard(name=LOS_REMAINING, display="remaining ICU stay", kind="days"),
    TaskCard(name=CVD_90D, display="90-day CVD, most likely", kind="class_probabilities"),
)

log = logging.getLogger(__name__)

MODALITY_LABELS = {"static": "admission details (age, sex, unit)", "labs": "lab results", "vitals_tok": "vital signs",
                   "vitals": "vital signs of the last 24 h", "ecg": "12-lead ECG"}
STATIC_ONLY_NOTE = "inputs could not be read ({}); scored on static features only"
DEFAULT_CADENCE = timedelta(hours=1)
TOP_DRIVERS = 3
MIN_DRIVER_LOG_ODDS = 0.05     # smaller shares are noise next to the model's own uncertainty
STEADY_WITHIN = 0.05           # a change of less than 5 % from the previous value reads as "steady"
STATIC_WORDS = {"gender": "sex", "age": "age", "height_cm": "height", "weight_kg": "weight",
                "admission_type": "admission type", "admission_location": "admitted from",
                "first_careunit": "care unit"}
STATIC_UNITS = {"age": "y", "height_cm": "cm", "weight_kg": "kg"}


@dataclass
class MedM2TState:
    encoder: object                 # model.incremental.StayState
    opened: StayOpened | None = None
    broken: str | None = None       # why the events could not be featurised (then: static features only)
    recent: dict = field(default_factory=dict)  # item -> its two latest Measurements (for the drivers' words)


class MedM2TScorer:
    name = MEDM2T

    def __init__(self, predictor, cadence: timedelta = DEFAULT_CADENCE):
        from model.explain import Explainer
        from model.incremental import IncrementalEncoder

        self.predictor = predictor
        self.incremental = IncrementalEncoder(predictor.model, predictor.featurizer)
        self.version: str = predictor.version
        # The summaries span the whole stay, so the store keeps all of a stay's measurements.
        self.needs = Needs(lookback=None, ecgs=predictor.cfg.max_ecgs, cadence=cadence)
        temperature = predictor.calibration.temperature(MORTALITY) if predictor.calibration else 1.0
        self.explainer = Explainer.for_model(predictor.model, predictor.featurizer, temperature)
        untrained = set(predictor.meta.get("train_info", {}).get("tasks_without_labels", ()))
        self._calibration = {t: ("untrained head: the training data had no labels for this task" if t in untrained
                                 else predictor.calibration_label(t)) for t in TASKS}

    @classmethod
    def load(cls, checkpoint_dir: str | Path, device: str = "auto",
             cadence: timedelta = DEFAULT_CADENCE) -> MedM2TScorer:
        from model.inference import Predictor

        return cls(Predictor(checkpoint_dir, device), cadence)

    def new_state(self) -> MedM2TState:
        return MedM2TState(self.incremental.new_state(None))

    def apply(self, state: MedM2TState, events: Sequence[_Event]) -> None:
        state.opened = next((e for e in events if isinstance(e, StayOpened)), state.opened)
        for e in events:
            if isinstance(e, Measurement) and (e.value is not None or e.text):
                state.recent[e.item] = sorted([*state.recent.get(e.item, ()), e], key=lambda m: m.time)[-2:]
        if state.broken:
            return
        unknown = self.predictor.featurizer.unknown_items
        ignored = unknown.total()
        try:
            with self.predictor.autocast():
                self.incremental.update(state.encoder, events)
        except Exception as exc:  # noqa: BLE001 - odd data must not stop scoring: say what is left
            log.warning("MedM2T could not featurise an event of a stay (%s); static features only from now on",
                        type(exc).__name__)
            state.broken = STATIC_ONLY_NOTE.format(type(exc).__name__)
        metrics.UNKNOWN_ITEMS.inc(unknown.total() - ignored)

    def snapshot(self, state: MedM2TState) -> MedM2TState:
        """The state as of now, for `score`: the worker scores several points of one stay in one pass."""
        return MedM2TState(self.incremental.snapshot(state.encoder), state.opened, state.broken, dict(state.recent))

    def score(self, items: Sequence[tuple[MedM2TState, StayPoint]]) -> list[RiskScore]:
        if not items:
            return []
        f = self.predictor.featurizer
        preds: list[dict | None] = [None] * len(items)
        incremental = [i for i, (s, _) in enumerate(items) if not s.broken and s.encoder.admit is not None]
        recompute = {}
        for i, (s, p) in enumerate(items):
            if s.broken:
                recompute[i] = f.encode([s.opened] if s.opened else [], p.at)
            elif s.encoder.admit is None:  # no StayOpened yet: place the held events relative to the earliest
                recompute[i] = f.encode(s.encoder.pending, p.at)
        if incremental:
            for i, pred in zip(incremental, self._score_states([items[i][0].encoder for i in incremental],
                                                               [items[i][1] for i in incremental]), strict=True):
                preds[i] = pred
        if recompute:
            idx = sorted(recompute)
            for i, pred in zip(idx, self.predictor.predict_inputs([recompute[i] for i in idx])):
                preds[i] = pred
        return [self._risk_score(p, pred, s) for (s, p), pred in zip(items, preds)]

    def score_batch(self, views: Sequence[StayView]) -> list[RiskScore]:
        """Score whole views from fresh states (offline use, tests and benchmarks)."""
        return score_views(self, views)

    def _score_states(self, states: list, points: list[StayPoint]) -> list[dict]:
        from model.inputs import hours
        from model.inference import results_from_outputs

        ats = [p.at for p in points]
        with self.predictor.autocast():
            wide = self.incremental.wide_inputs(states)
            out = self.incremental.score(states, ats, wide)
        rows = [(max(0.0, hours(at, s.admit)), s.present, s.n_unknown) for s, at in zip(states, ats)]
        results = results_from_outputs(out, rows, self.predictor.calibration)
        if self.explainer is not None:
            why = self.explainer.attribute(wide, out[MORTALITY])
            top = np.argsort(-np.abs(why.log_odds), axis=1)[:, :TOP_DRIVERS]
            for i, r in enumerate(results):
                r["drivers"] = [(why.inputs[k], float(why.log_odds[i, k])) for k in top[i]
                                if abs(why.log_odds[i, k]) >= MIN_DRIVER_LOG_ODDS]
                r["deep_log_odds"] = float(why.deep[i])
        return results

    def card(self) -> dict:
        """The model card the worker publishes at models:medm2t (the dashboard's system page shows it)."""
        meta = self.predictor.meta
        cadence = self.needs.cadence.total_seconds() / 60  # 0: every point
        return {
            "name": "MedM2T", "version": self.version, "order": 20, "tasks": [t.model_dump() for t in TASK_CARDS],
            "architecture": meta.get("architecture"),
            "preset": meta.get("preset"), "n_parameters": meta.get("n_parameters"), "created": meta.get("created"),
            "device": self.predictor.device, "calibration": dict(self._calibration),
            "calibration_fit": meta.get("calibration"),
            "scoring_cadence_minutes": cadence,
            "tasks_without_labels": list(meta.get("train_info", {}).get("tasks_without_labels", ())),
            "training_data": meta.get("train_info", {}), "metrics": meta.get("metrics", {}),
            "intended_use": "Research and demonstration on replayed data. Not a medical device; not for clinical decisions.",
        }

    def _risk_score(self, point: StayPoint, p: dict, state: MedM2TState) -> RiskScore:
        note = state.broken
        missing = [MODALITY_LABELS[m] for m, ok in p["present"].items() if not ok and m in MODALITY_LABELS]
        if not any(ok for m, ok in p["present"].items() if m != "static"):
            note = note or "no measurements or ECGs yet: score rests on static features and learned defaults only"
        detail = {"note": note} if note else {}
        if p["n_unknown"]:
            detail["unknown_items_ignored"] = p["n_unknown"]
        cal = self._calibration
        prob, days, classes = (PUBLISHED_DIGITS[k] for k in ("probability", "days", "class_probabilities"))
        cvd = {c: _round(v, classes) for c, v in p[CVD_90D].items()}
        tasks = {
            MORTALITY: TaskScore(value=_round(p[MORTALITY], prob), kind="probability", calibration=cal[MORTALITY],
                                   detail={**detail, **_drivers_detail(p, state, point)}),
            LOS_REMAINING: TaskScore(value=_round(p[LOS_REMAINING], days), kind="days", calibration=cal[LOS_REMAINING],
                                       detail={**detail, "los_total_days": _round(p["los_total"], days)}),
            CVD_90D: TaskScore(value=_round(1.0 - p[CVD_90D]["none"], classes), kind="class_probabilities",
                                 probabilities=cvd, calibration=cal[CVD_90D],
                                 detail={**detail, "value": "probability of any CVD class"}),
        }
        # A NaN/inf output is a model fault, never a number to act on: leave the task out and say so.
        bad = [t for t, ts in tasks.items() if not _all_finite(ts)]
        if bad:
            log.warning("non-finite MedM2T output for stay %s at %s (%s); task(s) left out of the score",
                        point.stay_id, point.at.isoformat(), ", ".join(bad))
            missing += [f"{t} (non-finite model output)" for t in bad]
            tasks = {t: ts for t, ts in tasks.items() if t not in bad}
        return RiskScore(
            stay_id=point.stay_id, subject_id=point.subject_id, scorer=self.name, model_version=self.version,
            scored_at=point.at, hours_since_admission=round(p["elapsed_h"], 3) if point.opened else None, tasks=tasks,
            inputs_seen=point.inputs_seen, missing=tuple(missing),
        )


def _drivers_detail(p: dict, state: MedM2TState, point: StayPoint) -> dict:
    if "drivers" not in p:
        return {}
    words = [f"{_driver_words(name, state, point)} ({log_odds:+.2f})" for name, log_odds in p["drivers"]]
    return {"drivers": "; ".join(words) or "no single input moves the risk by 0.05 log-odds or more",
            "deep_log_odds": _round(p["deep_log_odds"], 3)}


def _driver_words(name: str, state: MedM2TState, point: StayPoint) -> str:
    """One input in clinical words: 'lactate 4.1 mmol/L, rising', 'age 78 y', 'care unit MICU'."""
    if name == FREQUENCY:
        return f"which items were measured and how often ({point.inputs_seen} measurements and ECGs so far)"
    kind, key = name.split(":", 1)
    if kind == "static":
        value = getattr(state.opened.static, key, None) if state.opened else None
        unit = STATIC_UNITS.get(key, "")
        shown = "unknown" if value is None else (f"{value:g} {unit}".strip() if isinstance(value, float | int) else str(value))
        return f"{STATIC_WORDS.get(key, key)} {shown}"
    seen = state.recent.get(key)
    if not seen:
        return f"{key} not measured"
    last = seen[-1]
    label = last.label or key
    if last.value is None:
        return f"{label} {last.text}"
    words = f"{label} {last.value:.3g} {last.unit or ''}".strip()
    if len(seen) == 2 and seen[0].value is not None:
        prev = seen[0].value
        change = last.value - prev
        words += (", steady" if abs(change) <= STEADY_WITHIN * max(abs(prev), 1e-9)
                  else ", rising" if change > 0 else ", falling")
    return words


def _round(x: float, digits: int) -> float:
    return round(x, digits) if math.isfinite(x) else x


def _all_finite(task: TaskScore) -> bool:
    numbers = [task.value, *(task.probabilities or {}).values(),
               *(v for v in task.detail.values() if isinstance(v, float))]
    return all(math.isfinite(x) for x in numbers)
