"""Evaluation of a model on a cohort: metrics per task at the end of each stay's data, and the same
metrics at the 6/12/24/48 h landmarks the stays reach.

Top-level task entries are judged at "end" (the last available data, e.g. 48 h for PhysioNet 2012, as
the benchmark protocol does). `los_total` = elapsed + predicted remaining days against the true total.
A task without any labels in the data is reported with n = 0 and null metrics. Mortality also gets its
reliability table (10 equal-width bins of predicted probability: count, mean predicted, observed rate).

Every stay with a StayOpened is scored at "end", a stay without any measurement or ECG on its static
inputs (counted in `stays_static_only`); `stays_not_scored` counts the rest.

Predictions are calibrated with the checkpoint's calibration (model/calibration.py) unless asked not to.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from medm2t.vocabulary import CVD_90D, CVD_CLASSES, LOS_REMAINING, MORTALITY
from model.batches import predict
from model.data import describe, evaluation_samples, load_cohort
from model.metrics import binary_metrics, multiclass_metrics, regression_metrics, reliability


def predict_cohort(model, featurizer, cohort, indices: Sequence[int] | None, device: str = "cpu",
                   use_cache: bool = True, progress: bool = True, landmarks: bool = True, calibration=None) -> dict:
    """Predictions and labels for every evaluation sample, as flat arrays (concatenable across folds)."""
    samples = evaluation_samples(cohort, indices, featurizer, use_cache, progress, landmarks)
    pred = predict(model, samples, device=device, calibration=calibration)
    t = [s.targets for s in samples]
    return {
        "landmark": np.array([s.landmark for s in samples], dtype=object),
        "stay_id": np.array([s.stay_id for s in samples], dtype=np.int64),
        "elapsed_days": np.array([x.elapsed_days for x in t], dtype=np.float64),
        "y_mortality": np.array([np.nan if x.mortality is None else x.mortality for x in t], dtype=np.float64),
        "y_los_remaining": np.array([np.nan if x.los_remaining is None else x.los_remaining for x in t], dtype=np.float64),
        "y_cvd_90d": np.array([-1 if x.cvd_90d is None else x.cvd_90d for x in t], dtype=np.int64),
        "static_only": np.array([not any(v for m, v in s.inputs.present.items() if m != "static") for s in samples]),
        **pred,
    }


def _task_metrics(p: dict, sel: np.ndarray) -> dict:
    out = {MORTALITY: binary_metrics(p["y_mortality"][sel], p[MORTALITY][sel])}
    out[MORTALITY]["reliability"] = reliability(p["y_mortality"][sel], p[MORTALITY][sel])
    out[LOS_REMAINING] = regression_metrics(p["y_los_remaining"][sel], p[LOS_REMAINING][sel])
    el = p["elapsed_days"][sel]
    out["los_total"] = regression_metrics(p["y_los_remaining"][sel] + el, p[LOS_REMAINING][sel] + el)
    has = sel & (p["y_cvd_90d"] >= 0)
    out[CVD_90D] = multiclass_metrics(p["y_cvd_90d"][has], p[CVD_90D][has], CVD_CLASSES)
    return out


def metrics_from_predictions(p: dict) -> dict:
    lm = p["landmark"]
    out = _task_metrics(p, lm == "end")
    out["stays_scored"] = int((lm == "end").sum())
    out["stays_static_only"] = int((p["static_only"] & (lm == "end")).sum())
    out["landmarks"] = {
        name: _task_metrics(p, lm == name) for name in ("6h", "12h", "24h", "48h") if (lm == name).any()
    }
    return out


def evaluate_model(model, featurizer, cohort, indices: Sequence[int] | None, device: str = "cpu",
                   use_cache: bool = True, progress: bool = True, return_predictions: bool = False,
                   calibration=None) -> dict:
    pred = predict_cohort(model, featurizer, cohort, indices, device, use_cache, progress, calibration=calibration)
    metrics = metrics_from_predictions(pred)
    return {"metrics": metrics, "predictions": pred} if return_predictions else metrics


def evaluate_checkpoint(checkpoint_dir, data_spec: str, device: str = "auto", use_cache: bool = True,
                        progress: bool = True, calibrated: bool = True) -> dict:
    """The `medm2t evaluate` result: metrics plus what was evaluated (and with which calibration)."""
    import torch

    from model.calibration import Calibration
    from model.checkpoint import load_checkpoint

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, featurizer, cfg, meta = load_checkpoint(checkpoint_dir, device=device)
    cohort = load_cohort(data_spec, use_cache, progress)
    calibration = Calibration.from_dict(meta.get("calibration")) if calibrated else None
    metrics = evaluate_model(model, featurizer, cohort, None, device, use_cache, progress, calibration=calibration)
    metrics["calibration"] = calibration.to_dict() if calibration else None
    metrics["data"] = describe(cohort)
    metrics["stays_not_scored"] = len(cohort.compact) - metrics["stays_scored"]
    metrics["checkpoint"] = {"dir": str(checkpoint_dir), "model_version": meta.get("model_version")}
    return metrics
