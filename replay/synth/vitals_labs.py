"""Bedside vitals (chartevents) and laboratory results (labevents) of one synthetic stay, drawn from its
latent severity. Vitals come about hourly with missingness and are stored a few minutes after charting;
lab panels come every 4-24 h (more often when sicker) and are stored 30-120 min after the draw."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from replay.synth import dictionaries as d
from replay.synth.course import CVD_CHD, CVD_HF, CVD_NONE, CVD_STROKE, DAY, Cohort

HOUR = 3600
MINUTE = 60

# Decimals charted per item (HR 80, temperature 98.6, pH 7.38).
CHART_DECIMALS = {d.HR: 0, d.SBP: 0, d.DBP: 0, d.MAP: 0, d.RR: 0, d.SPO2: 0, d.TEMP_F: 1, d.TEMP_C: 1, d.FIO2: 0,
                  d.GCS_EYE: 0, d.GCS_VERBAL: 0, d.GCS_MOTOR: 0, d.PH_ART: 2}


@dataclass
class Rows:
    """Column arrays of one table's rows for one stay; times are seconds since the stay's ICU admission."""

    time: np.ndarray
    store: np.ndarray
    itemid: np.ndarray
    valuenum: np.ndarray      # NaN where the row has only text
    text: np.ndarray          # object array: value text where it is not the number (GCS words, '<0.01', 'NEG')
    group: np.ndarray         # labs: specimen number within the stay; vitals: unused (0)

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        if not parts:
            e = np.zeros(0)
            return Rows(e.astype(np.int64), e.astype(np.int64), e.astype(np.int64), e, e.astype(object), e.astype(np.int64))
        return Rows(*(np.concatenate([getattr(p, f) for p in parts]) for f in
                      ("time", "store", "itemid", "valuenum", "text", "group")))


@dataclass
class Baseline:
    """Per-patient set points, so the same severity looks different in different people."""

    hr: float
    sbp: float
    dbp_offset: float
    rr: float
    temp: float
    hb: float
    creat: float
    plt: float
    on_oxygen_at: float


def baseline(rng: np.random.Generator, cohort: Cohort, i: int) -> Baseline:
    """Frail patients (the outcome model's hidden `frailty`) partly show it from the first labs, as chronic
    kidney disease and anaemia do; heart failure adds cardiorenal creatinine."""
    frail = float(cohort.frailty[i])
    renal = 1.2 if cohort.cvd[i] == CVD_HF else 1.0
    return Baseline(
        hr=rng.normal(80, 9) + 2.5 * frail, sbp=rng.normal(124, 13) + 0.2 * (cohort.age[i] - 64), dbp_offset=rng.normal(0, 5),
        rr=rng.normal(16, 1.5), temp=rng.normal(36.9, 0.25), hb=rng.normal(12.0 + 1.0 * cohort.male[i], 1.4) - 0.5 * frail,
        creat=renal * float(np.exp(rng.normal(np.log(0.9 + 0.2 * cohort.male[i]), 0.3) + 0.2 * frail)),
        plt=float(np.exp(rng.normal(np.log(230), 0.3))), on_oxygen_at=rng.uniform(0.9, 1.6),
    )


def heart_rate(base: Baseline, severity: np.ndarray, af: bool) -> np.ndarray:
    """Expected heart rate (no measurement noise); the ECG generator uses the same value."""
    return base.hr + 11 * severity + (18 if af else 0)


def vitals(rng: np.random.Generator, cohort: Cohort, i: int, base: Baseline) -> Rows:
    end = cohort.los_days[i] * DAY
    hours = np.arange(0, end, HOUR, dtype=np.float64) + rng.uniform(0, 12 * MINUTE)
    n = len(hours)
    sev = cohort.severity(i, hours / DAY)
    noise = rng.normal(0, 1, (8, n))
    af = bool(cohort.af[i])
    hr = np.clip(heart_rate(base, sev, af) + (9 if af else 4) * noise[0], 30, 220)
    sbp = np.clip(base.sbp - 11 * sev + 9 * noise[1], 55, 230)
    dbp = np.clip(0.55 * sbp + 5 + base.dbp_offset + 5 * noise[2], 25, 140)
    map_ = (sbp + 2 * dbp) / 3 + 2 * noise[3]
    congested = cohort.cvd[i] == CVD_HF  # pulmonary congestion: faster breathing, lower saturation
    rr = np.clip(base.rr + 2.6 * sev + 2.0 * congested + 2.2 * noise[4], 6, 50)
    spo2 = np.clip(98.5 - 1.6 * sev - 1.2 * congested + 1.2 * noise[5], 70, 100)
    # fever with severity in everyone, more where infection (not a CVD) brought the patient in
    temp_c = base.temp + (0.35 if cohort.cvd[i] == CVD_NONE else 0.2) * sev + 0.3 * noise[6]
    fio2 = np.clip(21 + 22 * (sev - base.on_oxygen_at) + 5 * noise[7], 21, 100)

    parts: list[Rows] = []

    def add(itemid: int, values: np.ndarray, keep_p: float, every: int = 1, text: np.ndarray | None = None) -> None:
        idx = np.arange(0, n, every)
        idx = idx[rng.random(len(idx)) < keep_p]
        t = hours[idx].astype(np.int64) // MINUTE * MINUTE
        store = t + rng.integers(1, 16, len(idx)) * MINUTE
        txt = text[idx] if text is not None else np.full(len(idx), None, dtype=object)
        parts.append(Rows(t, store, np.full(len(idx), itemid), values[idx].astype(float), txt, np.zeros(len(idx), dtype=np.int64)))

    add(d.HR, hr, 0.96)
    add(d.SBP, sbp, 0.9)
    add(d.DBP, dbp, 0.9)
    add(d.MAP, map_, 0.88)
    add(d.RR, rr, 0.9)
    add(d.SPO2, spo2, 0.93)
    if cohort.temp_fahrenheit[i]:
        add(d.TEMP_F, temp_c * 9 / 5 + 32, 0.85, every=4)
    else:
        add(d.TEMP_C, temp_c, 0.85, every=4)
    oxygen = np.nonzero(sev > base.on_oxygen_at)[0]
    if len(oxygen):
        sel = np.zeros(n, dtype=bool)
        sel[oxygen] = True
        add(d.FIO2, np.where(sel, fio2, np.nan), 0.9, every=4)
        parts[-1] = _drop_nan(parts[-1])
    for itemid, score in _gcs(rng, cohort, i, sev).items():
        words = np.array([d.GCS_TEXT[itemid][int(s)] for s in score], dtype=object)
        add(itemid, score, 0.85, every=4, text=words)
    return _drop_nan(Rows.concat(parts))


def _gcs(rng: np.random.Generator, cohort: Cohort, i: int, sev: np.ndarray) -> dict[int, np.ndarray]:
    stroke = rng.uniform(0.0, 5.0) if cohort.cvd[i] == CVD_STROKE else 0.0  # from minor to dense deficits
    deficit = np.clip(1.3 * np.maximum(sev - 0.8, 0) + stroke + rng.normal(0, 0.8, len(sev)), 0, 12)
    return {
        d.GCS_EYE: np.clip(np.round(4 - 0.3 * deficit), 1, 4),
        d.GCS_VERBAL: np.clip(np.round(5 - 0.4 * deficit), 1, 5),
        d.GCS_MOTOR: np.clip(np.round(6 - 0.3 * deficit), 1, 6),
    }


def _drop_nan(rows: Rows) -> Rows:
    keep = ~np.isnan(rows.valuenum) | (rows.text != None)  # noqa: E711 (object array comparison)
    return Rows(*(getattr(rows, f)[keep] for f in ("time", "store", "itemid", "valuenum", "text", "group")))


def _one_draw(rng: np.random.Generator, at: int, k: int, values: dict, sev_k: float, cvd: int) -> list[Rows]:
    """The rows of the k-th blood draw at `at`: the panels ordered and the extra tests asked for (each
    group stored after its own lab's turnaround)."""
    out: list[Rows] = []
    items = []
    if rng.random() < 0.95:
        items.append((d.CHEM_PANEL, 75))
    if rng.random() < 0.9:
        items.append((d.CBC_PANEL, 55))
    extra = [50813] if rng.random() < 0.3 + 0.2 * sev_k else []
    if rng.random() < 0.3:
        extra.append(50885)
    # troponin: asked for on suspicion (chest pain, dyspnoea, shock), not only in coronary disease
    if rng.random() < (0.6 if cvd == CVD_CHD and k < 3 else 0.3 if cvd == CVD_HF else 0.12) + 0.08 * sev_k:
        extra.append(51003)
    if extra:
        items.append((tuple(extra), 90))
    for group, (itemids, delay) in enumerate(items):
        m = len(itemids)
        store = at + int(rng.uniform(delay - 25, delay + 30)) * MINUTE + np.zeros(m, dtype=np.int64)
        vals = np.array([values[it][k] for it in itemids])
        out.append(Rows(np.full(m, at), store, np.array(itemids), vals, np.full(m, None, dtype=object),
                        np.full(m, k * 4 + group)))
    if k == 0 and rng.random() < 0.35:
        pos = rng.random() < 0.15
        out.append(Rows(np.array([at]), np.array([at + 95 * MINUTE]), np.array([d.URINE_NITRITE]),
                        np.array([np.nan]), np.array(["POS" if pos else "NEG"], dtype=object), np.array([k * 4 + 3])))
    return out


def labs(rng: np.random.Generator, cohort: Cohort, i: int, base: Baseline) -> tuple[Rows, Rows]:
    """(labevents rows, chartevents rows of arterial pH from blood gases)."""
    end = cohort.los_days[i] * DAY
    draws = [-rng.uniform(0.5, 4) * HOUR]  # the first draw is in the ED, before ICU admission
    while True:
        sev_now = float(cohort.severity(i, np.array([max(draws[-1], 0) / DAY]))[0])
        nxt = draws[-1] + rng.uniform(4, 24) * HOUR / (1 + 0.35 * sev_now)
        if nxt >= end:
            break
        draws.append(nxt)
    # Labs are drawn on the clock hour.
    t = ((cohort.intime[i] + np.array(draws, dtype=np.int64)) // HOUR * HOUR - cohort.intime[i]).astype(np.int64)
    n = len(t)
    sev = cohort.severity(i, np.maximum(t, 0) / DAY)
    z = rng.normal(0, 1, (16, n))
    cvd = cohort.cvd[i]
    na = 139 + 3 * z[0]
    cl = na - 36 + 2 * z[1]
    bicarb = 25 - 2.6 * sev + 1.6 * z[2]
    values = {
        50983: na, 50971: 4.1 + 0.18 * sev + 0.35 * z[3], 50902: cl, 50882: bicarb, 50868: na - cl - bicarb,
        51006: 16 * (1 + 0.45 * sev) * np.exp(0.25 * z[4]), 50912: base.creat * (1 + 0.35 * sev) * np.exp(0.08 * z[5]),
        50931: 125 + 16 * sev + 25 * z[6], 51301: 8 * np.exp(0.25 * z[7]) + 2.6 * sev,
        51222: base.hb - 0.45 * sev + 0.35 * z[8], 51265: np.clip(base.plt * np.exp(0.1 * z[9]) - 28 * sev, 8, None),
        50813: (0.9 + 0.7 * sev ** 1.3) * np.exp(0.25 * z[10]), 50885: 0.6 * np.exp(0.4 * z[11]) * (1 + 0.4 * sev),
        51003: _troponin(rng, cvd, sev, n),
    }
    values[51221] = 3 * values[51222] + z[12]
    values = {k: np.clip(v, 0.01, None) for k, v in values.items()}
    ph = 7.41 - 0.045 * sev + 0.03 * z[13]

    parts = [rows for k in range(n) for rows in _one_draw(rng, t[k], k, values, sev[k], cvd)]
    lab_rows = Rows.concat(parts)
    tn = lab_rows.itemid == 51003
    low = tn & (lab_rows.valuenum < 0.01)
    lab_rows.text[low] = "<0.01"
    lab_rows.valuenum[low] = np.nan

    gas = (sev > 1.0) & (t >= 0) & (rng.random(n) < 0.8)
    gas_t = t[gas] + 10 * MINUTE
    gas_rows = Rows(gas_t, gas_t + rng.integers(8, 25, len(gas_t)) * MINUTE, np.full(len(gas_t), d.PH_ART),
                    ph[gas], np.full(len(gas_t), None, dtype=object), np.zeros(len(gas_t), dtype=np.int64))
    return lab_rows, gas_rows


def _troponin(rng: np.random.Generator, cvd: int, sev: np.ndarray, n: int) -> np.ndarray:
    """Coronary disease: a peak from barely raised (unstable angina) to large infarcts, then decay. Everyone
    else: demand ischaemia raises it with severity (type 2 injury), more in heart failure."""
    if cvd == CVD_CHD:
        peak = np.exp(rng.normal(np.log(0.2), 1.4))
        return peak * np.exp(-0.3 * np.arange(n)) + 0.02 * np.exp(rng.normal(0, 0.5, n))
    scale = 0.03 if cvd == CVD_HF else 0.01
    return scale * (1 + 1.2 * sev) * np.exp(rng.normal(0, 0.7, n))
