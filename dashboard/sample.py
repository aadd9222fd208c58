"""A small, plausible ward written straight into Redis with the canonical models and the key layout of
stream/keys.py, as the worker would leave it. Tests and screenshots use it so that the dashboard can
be exercised without Kafka or the worker. The numbers are made up; nothing here is a clinical claim.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import redis

from medm2t.events import (LEADS, Alert, Ecg, Measurement, RiskScore, StaticFeatures, StayOpened, TaskScore,
                           Waveform, make_event_id)
from stream import keys
from stream.news2 import VERSION as NEWS2_VERSION
from stream.news2 import News2Scorer, response_band

NEWS2_CAL = "rule score (RCP 2017), not a probability"
VITALS = {  # concept: (label, unit, baseline, spread)
    "hr": ("Heart rate", "bpm", 88, 12), "sbp": ("Systolic BP", "mmHg", 118, 14), "rr": ("Respiratory rate", "insp/min", 18, 4),
    "spo2": ("SpO2", "%", 96, 2), "temp": ("Temperature", "°C", 37.1, 0.5),
}
LABS = {"50912": ("Creatinine", "mg/dL", 1.1, 0.4), "50813": ("Lactate", "mmol/L", 1.8, 0.8),
        "51301": ("White blood cells", "K/uL", 9.5, 3.0)}


@dataclass
class SampleStay:
    stay_id: int
    subject_id: int
    news2: RiskScore
    medm2t: RiskScore | None
    alerts: list[Alert]          # newest first
    stale: bool


def synthetic_ecg_mv(fs: float = 500.0, seconds: float = 10.0, hr: float = 75.0) -> np.ndarray:
    """(12, n) millivolts: a crude P-QRS-T complex per beat, scaled per lead."""
    t = np.arange(int(fs * seconds)) / fs
    beat = np.zeros_like(t)
    for onset in np.arange(0.2, seconds, 60.0 / hr):
        for centre, width, amp in ((0.0, 0.025, 0.15), (0.16, 0.012, -0.1), (0.18, 0.01, 1.1), (0.2, 0.012, -0.25),
                                   (0.42, 0.04, 0.3)):
            beat += amp * np.exp(-((t - onset - centre) ** 2) / (2 * width ** 2))
    scale = np.array([0.8, 1.0, 0.4, -0.9, 0.5, 0.7, -0.6, 0.2, 0.7, 1.2, 1.1, 0.9])[:, None]
    return scale * beat[None, :]


def write_sample_ward(r: redis.Redis, n_stays: int = 4, seed: int = 7, hours: int = 12) -> list[SampleStay]:
    """Write `n_stays` active stays; the last one has no MedM2T score and stale data. Returns what was written."""
    rng = np.random.default_rng(seed)
    now_wall = time.time()
    written = []
    for i in range(n_stays):
        stay_id, subject_id = 30_000_101 + 17 * i, 10_000_200 + i
        admit = datetime(2180, 3, 1, 8, 0) + timedelta(hours=3 * i)
        last_time = admit + timedelta(hours=hours)
        has_model, stale = i < n_stays - 1 or n_stays == 1, i == n_stays - 1 and n_stays > 1
        src = "sample"
        opened = StayOpened(event_id=make_event_id(src, stay_id, "open"), stay_id=stay_id, subject_id=subject_id,
                            time=admit, available_time=admit, source=src, hadm_id=20_000_000 + i, bed=str(i + 1),
                            static=StaticFeatures(gender="FM"[i % 2], age=float(rng.integers(40, 90)),
                                                  admission_type="EW EMER.", first_careunit="Medical Intensive Care Unit (MICU)",
                                                  height_cm=170.0, weight_kg=float(rng.integers(55, 110))))
        pipe = r.pipeline()
        for h in range(hours + 1):
            t = admit + timedelta(hours=h)
            drift = h * (i - 1) / hours
            for concept, (label, unit, base, spread) in VITALS.items():
                value = round(float(base + spread * (rng.normal() * 0.4 + (drift if concept in ("hr", "rr") else -0.3 * drift))), 1)
                m = Measurement(event_id=make_event_id(src, stay_id, concept, h), stay_id=stay_id, subject_id=subject_id,
                                time=t, available_time=t + timedelta(minutes=5), source=src, item=concept, label=label,
                                category="vital", concept=concept, value=value, unit=unit)
                pipe.zadd(keys.events(stay_id), {m.model_dump_json(): m.available_time.timestamp()})
            if h % 6 == 0:
                for item, (label, unit, base, spread) in LABS.items():
                    m = Measurement(event_id=make_event_id(src, stay_id, item, h), stay_id=stay_id, subject_id=subject_id,
                                    time=t, available_time=t + timedelta(minutes=50), source=src, item=item, label=label,
                                    category="lab", value=round(float(base + spread * rng.normal()), 2), unit=unit)
                    pipe.zadd(keys.events(stay_id), {m.model_dump_json(): m.available_time.timestamp()})
        for k, (ecg_h, hr) in enumerate(((1, 65 + 10 * i), (hours - 1, 70 + 15 * i))):  # a previous and a latest ECG
            ecg_t = admit + timedelta(hours=ecg_h)
            ecg = Ecg(event_id=make_event_id(src, stay_id, "ecg", k), stay_id=stay_id, subject_id=subject_id,
                      time=ecg_t, available_time=ecg_t, source=src, study_id=40_000_000 + 10 * i + k,
                      waveform=Waveform.from_array(synthetic_ecg_mv(hr=hr), fs=500.0, leads=LEADS),
                      measurements={"rr_interval": round(60000 / hr), "p_onset": 40, "p_end": 140, "qrs_onset": 200,
                                    "qrs_end": 290 + 10 * k, "t_end": 600 + 20 * k, "qrs_axis": 30.0, "t_axis": 45.0},
                      statements=("Sinus rhythm",) + (("Prolonged QT",) if k and i else ()))
            pipe.zadd(keys.ecgs(stay_id), {ecg.model_dump_json(): ecg_t.timestamp()})

        news2_hist, medm2t_hist = [], []
        for h in range(hours + 1):
            at = admit + timedelta(hours=h)
            points = int(np.clip(round(1 + 2.5 * i * h / hours + rng.normal() * 0.4), 0, 20))
            n2 = RiskScore(stay_id=stay_id, subject_id=subject_id, scorer="news2", model_version=NEWS2_VERSION,
                           scored_at=at, hours_since_admission=float(h), inputs_seen=5 * (h + 1),
                           tasks={"news2": TaskScore(value=points, kind="points", band=response_band(points, {}),
                                                     calibration=NEWS2_CAL,
                                                     detail={"rr": min(3, points // 3), "hr": points % 2, "spo2": 0})})
            news2_hist.append(n2)
            if has_model:
                p = float(np.clip(0.04 + 0.1 * i * h / hours + rng.normal() * 0.01, 0.001, 0.999))
                cvd = dict(zip(("none", "chd", "stroke", "hf"), rng.dirichlet([8, 1, 1, 1]).round(3).tolist()))
                medm2t_hist.append(RiskScore(
                    stay_id=stay_id, subject_id=subject_id, scorer="medm2t", model_version="small-v0.1", scored_at=at,
                    hours_since_admission=float(h), inputs_seen=5 * (h + 1), missing=("ecg",) if h < hours - 1 else (),
                    tasks={"mortality": TaskScore(value=p, kind="probability", calibration="uncalibrated", detail={
                               "drivers": f"Lactate {1.5 + i:.1f} mmol/L, rising (+{0.2 * i:.2f}); age 71 y (+0.15)",
                               "deep_log_odds": 0.05}),
                           "los_remaining": TaskScore(value=round(6.0 - h / 4 + i, 2), kind="days", calibration="uncalibrated"),
                           "cvd_90d": TaskScore(value=max(cvd.values()), kind="class_probabilities",
                                                probabilities=cvd, calibration="uncalibrated")}))
        for scorer, hist in (("news2", news2_hist), ("medm2t", medm2t_hist)):
            for s in hist:
                pipe.zadd(keys.score_history(stay_id, scorer), {s.model_dump_json(): s.scored_at.timestamp()})
            if hist:
                pipe.set(keys.latest_score(stay_id, scorer), hist[-1].model_dump_json())

        alerts = []
        if news2_hist[-1].tasks["news2"].band in ("medium", "high"):
            level = "emergency" if news2_hist[-1].tasks["news2"].band == "high" else "urgent"
            alerts.append(Alert(alert_id=make_event_id("alert", stay_id, "news2"), stay_id=stay_id, subject_id=subject_id,
                                scorer="news2", model_version=NEWS2_VERSION, task="news2", level=level, state="raised",
                                reason=f"NEWS2 {news2_hist[-1].tasks['news2'].value:.0f} points (band "
                                       f"{news2_hist[-1].tasks['news2'].band})",
                                value=news2_hist[-1].tasks["news2"].value, at=last_time - timedelta(minutes=30)))
        for a in alerts:
            pipe.lpush(keys.stay_alerts(stay_id), a.model_dump_json())
            pipe.lpush(keys.ALERT_FEED, a.model_dump_json())

        wall = now_wall - (3600 if stale else 5 * i)
        pipe.hset(keys.meta(stay_id), mapping={
            "stay_id": stay_id, "subject_id": subject_id, "opened": opened.model_dump_json(),
            "last_time": last_time.isoformat(), "last_wall": wall, "closed": "0", "n_events": 5 * (hours + 1)})
        pipe.zadd(keys.WARD_ACTIVE, {str(stay_id): wall})
        pipe.sadd(keys.WARD_STAYS, stay_id)
        pipe.execute()
        written.append(SampleStay(stay_id, subject_id, news2_hist[-1], medm2t_hist[-1] if medm2t_hist else None,
                                  alerts, stale))

    r.hset(keys.COUNTERS, mapping={"events_in": 1234, "duplicates": 3, "deadletters": 1, "batches": 210,
                                   "scores": 420, "alerts": sum(len(s.alerts) for s in written)})
    r.rpush(keys.LATENCY, *[round(float(x), 1) for x in rng.gamma(4, 6, size=60)])
    from model.scorer import TASK_CARDS

    r.set(keys.model_card("news2"), json.dumps(News2Scorer().card()))
    r.set(keys.model_card("medm2t"), json.dumps({
        "name": "MedM2T", "version": "small-v0.1", "order": 20, "tasks": [t.model_dump() for t in TASK_CARDS],
        "preset": "small", "training_data": "synthetic cohort (demo)",
        "metrics": {"mortality_auroc": None}, "intended_use": "Demonstration only; not for clinical decisions.",
        "calibration": "uncalibrated"}))
    return written
