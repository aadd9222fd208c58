"""MedM2T behind the worker's Scorer protocol (stream/scoring.py): one RiskScore per stay, never NaN, never
raising on sparse or odd data.

Scoring is incremental: the scorer keeps a bounded LRU cache of per-stay encoder states
(model/incremental.py, StayState). For each micro-batch it applies to every stay's state only the events it has
not applied yet (a StayView carries the stay's whole stored history; already-applied event ids are skipped, so
redelivery is a no-op), then runs the rest of the network for the whole batch in one pass. The result equals
a full recompute from the stay's events (tests/test_model_streaming.py, tests/test_pipeline_medm2t.py).
A stay whose state was evicted (or after a restart) is rebuilt from its StayView, unless the store has
already trimmed events of that view the state never saw (`_missed_trimmed_events`): such a stay is scored
by a full recompute of its bounded view, as before incremental scoring. Fallbacks: a stay whose events cannot be applied is scored on static features only (its
state is dropped); a stay asked for at a time earlier than an event already applied, or a batch whose
incremental pass fails, is scored by a full recompute from its raw events (Predictor.predict_inputs)."""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Sequence

from medm2t.events import RiskScore, TaskScore
from stream.scoring import StayView

log = logging.getLogger(__name__)

MODALITY_LABELS = {"static": "stay_opened (static features)", "labs": "labs", "vitals_tok": "vital signs",
                   "vitals": "vital-sign grid (last 24 h)", "ecg": "ecg"}


STATIC_ONLY_NOTE = "inputs could not be read ({}); scored on static features only"


@dataclass
class _Cached:
    state: object               # model.incremental.StayState
    latest: datetime | None     # latest available_time of the events applied to it


class MedM2TScorer:
    name = "medm2t"

    def __init__(self, predictor, max_states: int = 4096, history_max: int | None = None):
        from model.incremental import IncrementalEncoder

        self.predictor = predictor
        self.incremental = IncrementalEncoder(predictor.model, predictor.featurizer)
        self.max_states = max(int(max_states), 1)
        self.history_max = history_max  # the store's bound on a view's measurements (None: unbounded)
        self._states: OrderedDict[int, _Cached] = OrderedDict()  # stay_id -> state, least recently used first
        self.version: str = predictor.version
        untrained = set(predictor.meta.get("train_info", {}).get("tasks_without_labels", ()))
        self._calibration = {t: ("untrained head: the training data had no labels for this task" if t in untrained
                                 else predictor.calibration) for t in ("mortality", "los_remaining", "cvd_90d")}

    @classmethod
    def load(cls, checkpoint_dir: str | Path, device: str = "auto", max_states: int = 4096,
             history_max: int | None = None) -> MedM2TScorer:
        from model.inference import Predictor

        return cls(Predictor(checkpoint_dir, device), max_states, history_max)

    def score_batch(self, stays: Sequence[StayView]) -> list[RiskScore]:
        if not stays:
            return []
        preds: list[dict | None] = [None] * len(stays)
        notes: list[str | None] = [None] * len(stays)
        recompute: dict[int, object] = {}     # index -> StayInputs, scored by the full forward pass
        applied: dict[int, _Cached] = {}
        for i, view in enumerate(stays):
            try:
                if self._missed_trimmed_events(view):
                    self._states.pop(view.stay_id, None)
                    recompute[i] = self.predictor.featurizer.encode(_events(view), view.now)
                    continue
                applied[i] = self._apply(view)
            except Exception as exc:  # a scorer must not raise on odd data: score what is certainly usable
                log.warning("stay %s: featurization failed (%s); scoring static features only", view.stay_id, exc)
                self._states.pop(view.stay_id, None)
                recompute[i], notes[i] = self._static_only(view, exc)
        incremental: dict[int, _Cached] = {}  # index -> state, scored in one incremental pass
        for i, cached in applied.items():  # after all updates: a stay may appear twice in a batch
            view = stays[i]
            try:
                # No StayOpened yet: the state holds the events back until the admission time is known, while
                # the full recompute places them relative to the earliest event; keep that (today's) score.
                # A state holding an event not yet available at view.now would not give the score at view.now
                # (cannot happen in the worker, where now is the latest available_time seen): recompute.
                full = cached.state.admit is None or (cached.latest is not None and cached.latest > view.now)
                if not full:
                    incremental[i] = cached
                    continue
                if cached.state.admit is not None:
                    log.warning("stay %s: scored at %s, before an event already applied (%s); full recompute",
                                view.stay_id, view.now, cached.latest)
                recompute[i] = self.predictor.featurizer.encode(_events(view), view.now)
            except Exception as exc:
                log.warning("stay %s: featurization failed (%s); scoring static features only", view.stay_id, exc)
                recompute[i], notes[i] = self._static_only(view, exc)
        if incremental:
            idx = list(incremental)
            try:
                for i, p in zip(idx, self._score_states([incremental[i].state for i in idx],
                                                        [stays[i].now for i in idx]), strict=True):
                    preds[i] = p
            except Exception as exc:  # a fault of the incremental pass: drop those states, recompute the stays
                log.warning("incremental MedM2T scoring failed (%s: %s); full recompute of %d stay(s)",
                            type(exc).__name__, exc, len(idx))
                for i in idx:
                    self._states.pop(stays[i].stay_id, None)
                    try:
                        recompute[i] = self.predictor.featurizer.encode(_events(stays[i]), stays[i].now)
                    except Exception as exc2:
                        recompute[i], notes[i] = self._static_only(stays[i], exc2)
        if recompute:
            idx = sorted(recompute)
            for i, p in zip(idx, self.predictor.predict_inputs([recompute[i] for i in idx])):
                preds[i] = p
        return [self._risk_score(v, p, n) for v, p, n in zip(stays, preds, notes)]

    def _missed_trimmed_events(self, view: StayView) -> bool:
        """True when the store has trimmed events of this view that the stay's state never saw: the view is
        at its bound and its oldest measurement is new to the state (a worker catching up a backlog brings
        more than history_max events in one micro-batch). A state built from there would hold an arbitrary
        middle of the stay, so such a stay is scored by a full recompute of its bounded view instead."""
        if not self.history_max or len(view.measurements) < self.history_max:
            return False
        cached = self._states.get(view.stay_id)
        return cached is None or view.measurements[0].event_id not in cached.state.seen

    def _apply(self, view: StayView) -> _Cached:
        """Get (or create) the stay's cached state, mark it most recently used, apply the view's new events
        (those whose event_id the state has not seen; a redelivered view changes nothing)."""
        cached = self._states.get(view.stay_id)
        if cached is None:
            cached = _Cached(self.incremental.new_state(view.opened), None)
            self._states[view.stay_id] = cached
            while len(self._states) > self.max_states:
                self._states.popitem(last=False)
        else:
            self._states.move_to_end(view.stay_id)
        seen, ids, new = cached.state.seen, set(), []
        for e in _events(view):
            if e.event_id not in seen and e.event_id not in ids:
                ids.add(e.event_id)
                new.append(e)
        if not new:
            return cached
        with self.predictor.autocast():
            self.incremental.update(cached.state, new)
        latest = max(e.available_time for e in new)
        cached.latest = latest if cached.latest is None else max(cached.latest, latest)
        return cached

    def _score_states(self, states: list, ats: list[datetime]) -> list[dict]:
        from model.features import hours
        from model.inference import results_from_outputs

        with self.predictor.autocast():
            out = self.incremental.score(states, ats)
        rows = [(max(0.0, hours(at, s.admit)) if s.admit else 0.0, s.present, s.n_unknown) for s, at in zip(states, ats)]
        return results_from_outputs(out, rows)

    def _static_only(self, view: StayView, exc: Exception):
        inputs = self.predictor.featurizer.encode([view.opened] if view.opened else [], view.now)
        return inputs, STATIC_ONLY_NOTE.format(type(exc).__name__)

    def card(self) -> dict:
        """The model card the worker publishes at models:medm2t (the dashboard's system page shows it)."""
        from stream.alerts import probability_rules

        meta = self.predictor.meta
        tiers = probability_rules("mortality", self.name).tiers  # what the alert engine raises at, for the charts
        return {
            "name": "MedM2T", "version": self.version, "architecture": meta.get("architecture"),
            "preset": meta.get("preset"), "n_parameters": meta.get("n_parameters"), "created": meta.get("created"),
            "device": self.predictor.device, "calibration": self.predictor.calibration,
            "tasks_without_labels": list(meta.get("train_info", {}).get("tasks_without_labels", ())),
            "training_data": meta.get("train_info", {}), "metrics": meta.get("metrics", {}),
            "thresholds": {"mortality": {t.level: t.raise_at for t in tiers}},
            "intended_use": "Research and demonstration on replayed data. Not a medical device; not for clinical decisions.",
        }

    def _risk_score(self, view: StayView, p: dict, note: str | None) -> RiskScore:
        missing = [MODALITY_LABELS[m] for m, ok in p["present"].items() if not ok and m in MODALITY_LABELS]
        if not any(ok for m, ok in p["present"].items() if m != "static"):
            note = note or "no measurements or ECGs yet: score rests on static features and learned defaults only"
        detail = {"note": note} if note else {}
        if p["n_unknown"]:
            detail["unknown_items_ignored"] = p["n_unknown"]
        cal = self._calibration
        cvd = p["cvd_90d"]
        tasks = {
            "mortality": TaskScore(value=p["mortality"], kind="probability", calibration=cal["mortality"],
                                   detail=dict(detail)),
            "los_remaining": TaskScore(value=p["los_remaining"], kind="days", calibration=cal["los_remaining"],
                                       detail={**detail, "los_total_days": p["los_total"]}),
            "cvd_90d": TaskScore(value=1.0 - cvd["none"], kind="class_probabilities", probabilities=dict(cvd),
                                 calibration=cal["cvd_90d"], detail={**detail, "value": "probability of any CVD class"}),
        }
        # A NaN/inf output is a model fault, never a number to act on: leave the task out and say so.
        bad = [t for t, ts in tasks.items() if not _all_finite(ts)]
        if bad:
            log.warning("stay %s: non-finite MedM2T output for %s at %s; task(s) left out of the score",
                        view.stay_id, ", ".join(bad), view.now)
            missing += [f"{t} (non-finite model output)" for t in bad]
            tasks = {t: ts for t, ts in tasks.items() if t not in bad}
        return RiskScore(
            stay_id=view.stay_id, subject_id=view.subject_id, scorer=self.name, model_version=self.version,
            scored_at=view.now, hours_since_admission=p["elapsed_h"] if view.opened else None, tasks=tasks,
            inputs_seen=len(view.measurements) + len(view.ecgs), missing=tuple(missing),
        )


def _events(view: StayView) -> list:
    return ([view.opened] if view.opened else []) + list(view.measurements) + list(view.ecgs)


def _all_finite(task: TaskScore) -> bool:
    numbers = [task.value, *(task.probabilities or {}).values(),
               *(v for v in task.detail.values() if isinstance(v, float))]
    return all(math.isfinite(x) for x in numbers)
