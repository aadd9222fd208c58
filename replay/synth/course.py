"""The latent clinical course of every synthetic ICU stay and the outcomes that follow from it.

Each stay has a severity s(t) >= 0 (0 = physiologically normal, ~3 = shocked) that is stable, deteriorating
or recovering. Vitals, labs and ECGs are drawn from s(t); death, length of stay and the CVD class follow
from the course parameters plus patient-level `frailty`, which the first labs show only in part (baseline
creatinine, haemoglobin, heart rate: vitals_labs.baseline), so outcomes are learnable from the first day's
data but never fully determined by it. No single input gives a CVD class away: each class shifts labs,
vitals, ECG findings and the care unit, and every one of those also occurs without it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STABLE, DETERIORATING, RECOVERING = 0, 1, 2
CVD_NONE, CVD_CHD, CVD_STROKE, CVD_HF = 0, 1, 2, 3

# Intercepts tuned on 200k simulated stays: ~10 % in-hospital deaths, mean ICU LOS ~4 days.
_DEATH_INTERCEPT = -5.2
_LOS_MU = 0.72

DAY = 86_400
MAX_SEVERITY = 4.0


@dataclass
class Cohort:
    """One row per ICU stay (= one admission = one subject); all arrays have length n."""

    seed: int
    subject_id: np.ndarray
    hadm_id: np.ndarray
    stay_id: np.ndarray
    age: np.ndarray
    male: np.ndarray
    cvd: np.ndarray            # 0 none, 1 CHD, 2 stroke, 3 HF: primary reason for this admission
    course: np.ndarray         # STABLE / DETERIORATING / RECOVERING
    s0: np.ndarray             # severity at ICU admission
    rate: np.ndarray           # deteriorating: severity gained per day; recovering: decay time constant (days)
    frailty: np.ndarray        # patient-level risk, partly visible in baseline labs
    af: np.ndarray             # atrial fibrillation during the stay
    ischaemia: np.ndarray      # 0 none, 1 inferior ST elevation, 2 anterior ST elevation, 3 T inversion only
    death: np.ndarray
    los_days: np.ndarray       # ICU length of stay (icustays.los)
    intime: np.ndarray         # epoch seconds (int64)
    temp_fahrenheit: np.ndarray
    anchor_year: np.ndarray
    study_base: np.ndarray     # the stay's ECGs get study ids study_base + 0..4
    time_scale: float = 1.0    # every stay's course runs this many times as long (demo cohorts: < 1)

    @property
    def n(self) -> int:
        return len(self.stay_id)

    def severity(self, i: int, t_days: np.ndarray) -> np.ndarray:
        """Severity of stay i at `t_days` since ICU admission."""
        s0, rate = self.s0[i], self.rate[i]
        t = np.clip(t_days, 0.0, None) / self.time_scale
        los = self.los_days[i] / self.time_scale
        if self.course[i] == DETERIORATING:
            # A survivor's deterioration peaks and then resolves; a death's continues to the end.
            peak = los if self.death[i] else 0.55 * los
            rise = s0 + rate * np.minimum(t, peak)
            s = np.where(t <= peak, rise, (s0 + rate * peak) * np.exp(-(t - peak) / 1.5))
        elif self.course[i] == RECOVERING:
            s = s0 * np.exp(-t / rate) + 0.2
        else:
            s = np.full_like(t, s0, dtype=float)
        return MAX_SEVERITY * np.tanh(s / MAX_SEVERITY)  # physiology saturates; long deteriorations stay plausible

    def stay_rng(self, i: int) -> np.random.Generator:
        """Stay i's own random stream: its data do not depend on which other stays are generated."""
        return np.random.default_rng([self.seed, 1, i])


def _ids(rng: np.random.Generator, n: int, base: int) -> np.ndarray:
    step = max(2, min(900, 9_000_000 // max(n, 1)))
    ids = base + np.cumsum(rng.integers(1, step, size=n))
    return rng.permutation(ids)


def _choice(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    """One categorical draw per row of `probs` (n, k)."""
    cum = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
    return (rng.random(len(probs))[:, None] > cum).sum(axis=1)


def make_cohort(n: int, seed: int, time_scale: float = 1.0) -> Cohort:
    rng = np.random.default_rng([seed, 0])
    age = np.clip(np.round(rng.normal(64, 16, n)), 18, 91).astype(int)
    male = rng.random(n) < 0.56
    frailty = rng.normal(0, 1, n)

    older = (age - 64) / 16
    cvd_logits = np.stack([np.zeros(n), -1.95 + 0.45 * older + 0.2 * male, -2.75 + 0.4 * older,
                           -1.95 + 0.55 * older], axis=1)
    cvd = _choice(rng, np.exp(cvd_logits))

    course_p = np.tile([0.55, 0.2, 0.25], (n, 1))
    course_p[cvd == CVD_HF] = [0.45, 0.3, 0.25]
    course_p[cvd == CVD_CHD] = [0.5, 0.2, 0.3]
    course = _choice(rng, course_p)

    s0 = rng.gamma(2.0, 0.45, n) + 0.25 * np.maximum(frailty, 0) + np.where(course == RECOVERING, 0.8, 0.0)
    rate = np.where(course == DETERIORATING, rng.uniform(0.25, 1.0, n), rng.uniform(0.8, 3.0, n))

    day1 = np.where(course == DETERIORATING, s0 + rate, np.where(course == RECOVERING, s0 * np.exp(-1 / rate) + 0.2, s0))
    logit = (_DEATH_INTERCEPT + 1.75 * day1 + 1.0 * (course == DETERIORATING) - 0.4 * (course == RECOVERING)
             + 0.5 * older + 0.5 * frailty + 0.3 * (cvd == CVD_HF) + rng.normal(0, 0.3, n))
    death = rng.random(n) < 1 / (1 + np.exp(-logit))

    log_los = (_LOS_MU + 0.25 * s0 + 0.35 * (course == DETERIORATING) + 0.2 * frailty - 0.25 * death
               + rng.normal(0, 0.75, n))
    los_days = np.clip(np.exp(log_los), 0.3, 60.0) * time_scale

    af_p = np.select([cvd == CVD_HF, cvd == CVD_STROKE, cvd == CVD_CHD], [0.4, 0.3, 0.12], 0.07)
    af = rng.random(n) < af_p * (1 + 0.3 * np.clip(older, 0, None))
    isch_p = np.select([cvd == CVD_CHD, cvd == CVD_HF], [0.5, 0.25], 0.08)  # ECG changes: neither needed nor exclusive
    ischaemic = rng.random(n) < isch_p
    ischaemia = np.where(ischaemic, rng.integers(1, 4, n), 0)

    anchor_year = rng.integers(2110, 2190, n)
    start = ((anchor_year - 1970) * 365.2425 * DAY).astype(np.int64)
    intime = start + rng.integers(0, 3 * 365 * DAY, n) + rng.integers(0, DAY, n)

    return Cohort(
        seed=seed, subject_id=_ids(rng, n, 10_000_000), hadm_id=_ids(rng, n, 20_000_000),
        stay_id=_ids(rng, n, 30_000_000), age=age, male=male, cvd=cvd, course=course, s0=s0, rate=rate,
        frailty=frailty, af=af, ischaemia=ischaemia, death=death, los_days=los_days, intime=intime,
        temp_fahrenheit=rng.random(n) < 0.7, anchor_year=anchor_year,
        study_base=40_000_000 + 5 * rng.permutation(n).astype(np.int64), time_scale=time_scale,
    )
