"""Post-hoc calibration: part of the checkpoint (meta.json "calibration"), applied wherever logits become
probabilities (model.inference.output_arrays), so the stream, `medm2t evaluate` and the model card all see
the same numbers.

Method: temperature scaling per task (Guo et al., ICML 2017). Mortality's logit and cvd_90d's class logits
are divided by one temperature each, fitted by minimising the negative log-likelihood on validation stays at
the evaluation landmarks (6/12/24/48 h where reached, and the end of data): the mix of stay ages at which
the stream scores a stay. One number per task keeps every ranking metric (AUROC, AUPRC) unchanged and cannot
overfit a few hundred validation stays the way isotonic regression can. Even one number can: a temperature
is kept only when it improves the validation log-likelihood significantly (likelihood-ratio test, 5 %,
counted per stay because a stay's landmarks are not independent); otherwise the temperature stays 1 and the
label says that calibration was checked and none was needed. On PhysioNet 2012 a temperature of 1.19 fitted
on 300 held-out set-a stays (p 0.07) made set-b's ECE worse (0.022 -> 0.032).

los_remaining is a regression in days, so there is nothing to calibrate; its label states the validation
error instead. A task without validation labels keeps its uncalibrated output and says so.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import PurePath

import numpy as np

from medm2t.vocabulary import CVD_90D, LOS_REMAINING, MORTALITY
from model.metrics import ece

_EPS = 1e-12  # float32 sigmoid outputs reach 1e-38 at the low end; 1 - 6e-8 at the high end


@dataclass(frozen=True)
class TaskCalibration:
    method: str              # "temperature"
    temperature: float       # applied: the fitted one if significant, else 1.0
    fitted_temperature: float
    p_value: float           # likelihood-ratio test of the fitted temperature against 1
    data: str                # what it was fitted on, in a few words
    n: int                   # validation samples (stay x landmark)
    ece_before: float | None
    ece_after: float | None


@dataclass(frozen=True)
class Calibration:
    tasks: dict[str, TaskCalibration]
    los_mae_days: float | None = None
    data: str = ""

    def temperature(self, task: str) -> float:
        return self.tasks[task].temperature if task in self.tasks else 1.0

    def label(self, task: str) -> str | None:
        """What a score of `task` says about its calibration; None when this calibration has nothing to say."""
        if task == LOS_REMAINING:
            if self.los_mae_days is None:
                return None
            return f"point estimate in days, no interval (validation MAE {self.los_mae_days:.2f} d on {self.data})"
        t = self.tasks.get(task)
        if t is None:
            return None
        after = "-" if t.ece_after is None else f"{t.ece_after:.3f}"
        if t.temperature == 1.0:
            return f"calibrated (checked by {t.method} scaling on {t.data}: none needed, p {t.p_value:.2f}; ECE {after})"
        return f"calibrated ({t.method} {t.temperature:.2f}, {t.data}, ECE {after})"

    def apply(self, pred: dict) -> dict:
        """Uncalibrated predictions (probabilities, as model.batches.predict returns them) -> calibrated."""
        out = dict(pred)
        if MORTALITY in self.tasks:
            out[MORTALITY] = _sigmoid(_logit(pred[MORTALITY]) / self.temperature(MORTALITY))
        if CVD_90D in self.tasks:
            out[CVD_90D] = _softmax(np.log(np.clip(pred[CVD_90D], _EPS, 1.0)) / self.temperature(CVD_90D))
        return out

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:6]

    def to_dict(self) -> dict:
        return {"tasks": {k: asdict(v) for k, v in self.tasks.items()}, "los_mae_days": self.los_mae_days,
                "data": self.data}

    @classmethod
    def from_dict(cls, d: dict | None) -> Calibration | None:
        if not isinstance(d, dict):  # older checkpoints: absent, or a free-text note
            return None
        return cls({k: TaskCalibration(**v) for k, v in d["tasks"].items()}, d.get("los_mae_days"), d.get("data", ""))


def fit_calibration(pred: dict, data: str) -> Calibration:
    """Fit per-task temperatures on validation predictions (model.evaluate.predict_cohort's dict)."""
    tasks = {}
    y = pred["y_mortality"]
    has = np.isfinite(y)
    if has.any() and 0 < y[has].sum() < has.sum():
        p, yy = pred[MORTALITY][has], y[has]
        z = _logit(p)
        tasks[MORTALITY] = _temperature(lambda t: _sigmoid(z / t), lambda q: _bce(yy, q), lambda q: ece(yy, q),
                                          pred["stay_id"][has], data)
    c = pred["y_cvd_90d"]
    has = c >= 0
    if has.any() and len(np.unique(c[has])) > 1:
        logp, cc = np.log(np.clip(pred[CVD_90D][has], _EPS, 1.0)), c[has]
        tasks[CVD_90D] = _temperature(lambda t: _softmax(logp / t), lambda q: _nll(cc, q),
                                        lambda q: ece(cc > 0, 1 - q[:, 0]), pred["stay_id"][has], data)
    err = pred[LOS_REMAINING] - pred["y_los_remaining"]
    mae = float(np.nanmean(np.abs(err))) if np.isfinite(err).any() else None
    return Calibration(tasks, mae, data)


def _temperature(probabilities, mean_loss, ece_of, stay_ids, data: str, alpha: float = 0.05) -> TaskCalibration:
    """Fit a temperature; keep it only if the likelihood-ratio test against 1 (one degree of freedom, the
    sample mean loss scaled by the number of stays, not of samples) rejects at `alpha`."""
    from scipy.optimize import minimize_scalar
    from scipy.stats import chi2

    res = minimize_scalar(lambda log_t: mean_loss(probabilities(float(np.exp(log_t)))), bounds=(-3.0, 3.0),
                          method="bounded")
    fitted = round(float(np.exp(res.x)), 4)
    stays = len(np.unique(stay_ids))
    stat = max(0.0, 2.0 * (mean_loss(probabilities(1.0)) - mean_loss(probabilities(fitted))) * stays)
    p_value = float(chi2.sf(stat, 1))
    kept = fitted if p_value < alpha else 1.0
    return TaskCalibration("temperature", kept, fitted, round(p_value, 4), data, len(stay_ids),
                           ece_of(probabilities(1.0)), ece_of(probabilities(kept)))


def short_data_name(spec: str) -> str:
    """'physionet2012:/x/set-b.tar.gz:/x/Outcomes-b.txt' -> 'set-b.tar.gz'; 'synth:/tmp/s300' -> 'synth s300'."""
    kind, _, rest = spec.partition(":")
    first = rest.split(":")[0].split(",")[0].split("+")[0]
    name = PurePath(first).name if first else spec
    return name if kind == "physionet2012" else f"{kind} {name}"


def _logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _bce(y, p) -> float:
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def _nll(c, P) -> float:
    return float(-np.mean(np.log(np.clip(P[np.arange(len(c)), c], _EPS, 1.0))))
