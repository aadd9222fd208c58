"""Small hand-made canonical stays (StayOpened, measurements and ECGs in delivery order, StayClosed, Outcome) for
the model tests: random but reproducible from the generator passed in."""
from __future__ import annotations

from datetime import datetime, timedelta

from medm2t.events import (Ecg, Measurement, Outcome, StaticFeatures, StayClosed, StayOpened, Waveform,
                           make_event_id)

T0 = datetime(2150, 1, 1, 8, 0)
ITEMS = [("50912", "lab", None, 1.0, 0.5), ("50971", "lab", None, 4.0, 0.6), ("51301", "lab", None, 9.0, 4.0),
         ("HR", "vital", "hr", 85.0, 15.0), ("SBP", "vital", "sbp", 120.0, 20.0), ("SpO2", "vital", "spo2", 96.0, 3.0)]


def _ev(cls, stay_id, key, t, avail=None, **kw):
    return cls(event_id=make_event_id("test", stay_id, key), stay_id=stay_id, subject_id=stay_id, time=t,
               available_time=avail or t, source="test", **kw)


def make_ecg(stay_id, key, t, rng, signal=None, leads=None, fs=500.0):
    sig = rng.normal(0, 0.2, (12, 5000)) if signal is None else signal
    wf = Waveform.from_array(sig, fs, leads) if leads else Waveform.from_array(sig, fs)
    return _ev(Ecg, stay_id, ("ecg", key), t, study_id=hash(key) % 10_000, waveform=wf,
               measurements={"rr_interval": 800.0, "p_onset": 29999.0, "qrs_axis": float(rng.normal(30, 20))},
               statements=("Sinus rhythm", str(rng.choice(["Normal ECG", "Atrial fibrillation"]))))


def make_stay(stay_id: int, rng, hours: float = 48, n: int = 60, ecgs: int = 1, death: bool | None = None):
    """One canonical stay: StayOpened, measurements + ECGs in (available_time, time, id) order, StayClosed, Outcome."""
    opened = _ev(StayOpened, stay_id, "open", T0, static=StaticFeatures(
        gender=str(rng.choice(["F", "M"])), age=float(rng.integers(20, 90)), admission_type="EMERGENCY",
        first_careunit="MICU", weight_kg=float(rng.normal(80, 10))))
    rows = []
    for k in range(n):
        code, cat, concept, mu, sd = ITEMS[rng.integers(len(ITEMS))]
        t = T0 + timedelta(hours=float(rng.uniform(0, hours)))
        rows.append(_ev(Measurement, stay_id, k, t, t + timedelta(minutes=float(rng.uniform(0, 30))), item=code,
                        category=cat, concept=concept, value=float(rng.normal(mu, sd))))
    t3 = T0 + timedelta(hours=3)
    rows.append(_ev(Measurement, stay_id, "txt", t3, item="51487", category="lab", text=str(rng.choice(["NEG", "POS"]))))
    for k in range(ecgs):
        rows.append(make_ecg(stay_id, k, T0 + timedelta(hours=float(rng.uniform(0, hours))), rng))
    rows.sort(key=lambda e: (e.available_time, e.time, e.event_id))
    end = T0 + timedelta(hours=hours)
    return [opened, *rows, _ev(StayClosed, stay_id, "close", end),
            _ev(Outcome, stay_id, "out", end, hospital_death=bool(rng.random() < 0.3) if death is None else death,
                los_days=hours / 24 + 1, cvd_90d="none")]
