"""MedM2T behind the worker's Scorer protocol (stream/scoring.py): one batched forward pass per
micro-batch of StayViews, one RiskScore per stay, never NaN, never raising on sparse or odd data."""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

from medm2t.events import RiskScore, TaskScore
from stream.scoring import StayView

log = logging.getLogger(__name__)

MODALITY_LABELS = {"static": "stay_opened (static features)", "labs": "labs", "vitals_tok": "vital signs",
                   "vitals": "vital-sign grid (last 24 h)", "ecg": "ecg"}


class MedM2TScorer:
    name = "medm2t"

    def __init__(self, predictor):
        self.predictor = predictor
        self.version: str = predictor.version
        untrained = set(predictor.meta.get("train_info", {}).get("tasks_without_labels", ()))
        self._calibration = {t: ("untrained head: the training data had no labels for this task" if t in untrained
                                 else predictor.calibration) for t in ("mortality", "los_remaining", "cvd_90d")}

    @classmethod
    def load(cls, checkpoint_dir: str | Path, device: str = "auto") -> MedM2TScorer:
        from model.inference import Predictor

        return cls(Predictor(checkpoint_dir, device))

    def score_batch(self, stays: Sequence[StayView]) -> list[RiskScore]:
        if not stays:
            return []
        feat = self.predictor.featurizer
        inputs, notes = [], []
        for view in stays:
            events = ([view.opened] if view.opened else []) + list(view.measurements) + list(view.ecgs)
            try:
                inputs.append(feat.encode(events, view.now))
                notes.append(None)
            except Exception as exc:  # a scorer must not raise on odd data: score what is certainly usable
                log.warning("stay %s: featurization failed (%s); scoring static features only", view.stay_id, exc)
                inputs.append(feat.encode([view.opened] if view.opened else [], view.now))
                notes.append(f"inputs could not be read ({type(exc).__name__}); scored on static features only")
        preds = self.predictor.predict_inputs(inputs)
        return [self._risk_score(v, p, n) for v, p, n in zip(stays, preds, notes)]

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


def _all_finite(task: TaskScore) -> bool:
    numbers = [task.value, *(task.probabilities or {}).values(),
               *(v for v in task.detail.values() if isinstance(v, float))]
    return all(math.isfinite(x) for x in numbers)
