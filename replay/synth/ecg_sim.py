"""Synthetic 12-lead ECGs from one simulated cardiac dipole (heart vector).

One beat is a sum of Gaussian waves (P, septal q, R, S, ST plateau, T), each pointing along its own 3-D
direction (x = patient's left, y = inferior, z = anterior). The beat is laid on a train of QRS onsets
(regular sinus, or irregular without P waves but with fibrillatory waves in atrial fibrillation) by
convolution, projected onto leads I and II and the six chest leads, and the other limb leads are derived
by Einthoven/Goldberger identities before quantising, so I+III=II and aVR+aVL+aVF=0 hold to within
quantisation. Machine measurements are taken from the same beat parameters and template.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import fftconvolve

FS = 500
N_SAMPLES = 5000
ADC_GAIN = 200.0  # adc units per mV, as MIMIC-IV-ECG
SENTINEL = 29999

# Chest electrode directions in the transverse plane (degrees from the patient's left towards anterior).
_CHEST_ANGLES = np.deg2rad([118, 95, 76, 60, 35, 8])
_CHEST = np.stack([np.cos(_CHEST_ANGLES), np.full(6, 0.15), np.sin(_CHEST_ANGLES)], axis=1)  # (6, 3)
_LEAD_I = np.array([1.0, 0.0, 0.0])
_LEAD_II = np.array([0.5, np.sqrt(3) / 2, 0.0])

# A fixed bank of Gaussian noise: each ECG reads windows at random offsets, ~10x cheaper than fresh draws.
_NOISE = np.random.default_rng(20240917).standard_normal(1 << 20).astype(np.float32)

ISCHAEMIA_NONE, ST_INFERIOR, ST_ANTERIOR, T_INVERSION = 0, 1, 2, 3


@dataclass
class EcgSim:
    adc: np.ndarray                       # (12, N_SAMPLES) int16, leads in medm2t.events.LEADS order
    measurements: dict[str, int]          # MIMIC-IV-ECG machine_measurements columns
    statements: list[str]                 # report_0.. lines
    qrs_onsets: np.ndarray                # sample index of every QRS onset (ground truth for checks)


def _unit(v: tuple[float, float, float]) -> np.ndarray:
    a = np.asarray(v, dtype=float)
    return a / np.linalg.norm(a)


def _wave(t: np.ndarray, centre: float, width: float) -> np.ndarray:
    return np.exp(-0.5 * ((t - centre) / width) ** 2)


def _noise(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape))
    start = int(rng.integers(0, len(_NOISE) - size))
    return _NOISE[start: start + size].reshape(shape)


def _twelve_leads(rng: np.random.Generator, vec: np.ndarray) -> np.ndarray:
    """The heart vector (3, N) seen by the 12 leads, with electrode noise, as ADC counts (12, N) int16."""
    noise = _noise(rng, (8, N_SAMPLES))
    lead_i = _LEAD_I.astype(np.float32) @ vec + 0.012 * noise[0]
    lead_ii = _LEAD_II.astype(np.float32) @ vec + 0.012 * noise[1]
    chest = 1.4 * (_CHEST.astype(np.float32) @ vec) + 0.015 * noise[2:]
    limb = np.stack([lead_i, lead_ii, lead_ii - lead_i, -(lead_i + lead_ii) / 2, lead_i - lead_ii / 2, lead_ii - lead_i / 2])
    mv = np.concatenate([limb, chest])
    return np.clip(np.rint(mv * np.float32(ADC_GAIN)), -32767, 32767).astype(np.int16)


def simulate(rng: np.random.Generator, hr: float, af: bool, ischaemia: int, sentinel_p: float = 0.03) -> EcgSim:
    hr = float(np.clip(hr, 35, 190))
    rr = 60.0 / hr
    pr = rng.uniform(0.13, 0.2)
    p_dur = rng.uniform(0.08, 0.11)
    qrs_dur = rng.uniform(0.08, 0.11)
    qtc = rng.uniform(0.38, 0.44) if rng.random() > 0.05 else rng.uniform(0.47, 0.52)  # 5 % long QT
    qt = qtc * np.sqrt(rr)  # Bazett
    axis = np.deg2rad(rng.normal(50, 25))
    rot = rng.normal(0, 0.15, 3)

    # The beat template, QRS onset at t = 0.
    t = np.arange(-0.3, qt + 0.15, 1 / FS)
    qrs_dir = _unit((np.cos(axis), np.sin(axis), -0.45) + rot)
    t_dir = _unit((np.cos(axis - 0.2), np.sin(axis - 0.2), 0.1) + rot)
    beat = (
        -0.15 * _wave(t, 0.012, 0.006)[:, None] * _unit((-0.4, 0.1, 0.9))
        + rng.uniform(0.9, 1.6) * _wave(t, 0.42 * qrs_dur, 0.11 * qrs_dur)[:, None] * qrs_dir
        + 0.45 * _wave(t, 0.75 * qrs_dur, 0.1 * qrs_dur)[:, None] * _unit((-0.3, -0.4, -0.8))
    )
    t_amp = rng.uniform(0.25, 0.45)
    if ischaemia in (T_INVERSION, ST_INFERIOR, ST_ANTERIOR) and (ischaemia == T_INVERSION or rng.random() < 0.5):
        t_amp = -t_amp
    beat += t_amp * _wave(t, qt - 0.1 * np.sqrt(rr) - 0.03, 0.05 * np.sqrt(rr))[:, None] * t_dir
    if ischaemia in (ST_INFERIOR, ST_ANTERIOR):
        injury = _unit((0.1, 1.0, 0.1)) if ischaemia == ST_INFERIOR else _unit((-0.1, 0.0, 1.0))
        plateau = 1 / (1 + np.exp(-(t - qrs_dur) / 0.006)) * 1 / (1 + np.exp((t - (qt - 0.06)) / 0.02))
        beat += rng.uniform(0.15, 0.35) * plateau[:, None] * injury
    if not af:
        beat += 0.15 * _wave(t, -pr + p_dur / 2, p_dur / 5)[:, None] * _unit((0.7, 0.7, 0.1))

    # QRS onsets over the 10 s strip.
    if af:
        gaps = rr * rng.gamma(12, 1 / 12, 40)
    else:
        gaps = rr * (1 + 0.02 * rng.normal(0, 1, 40))
    onsets = rng.uniform(0.05, rr) + np.concatenate([[0.0], np.cumsum(gaps)])
    onsets = onsets[onsets < N_SAMPLES / FS]
    offset = int(round(0.3 * FS))  # the template starts 0.3 s before QRS onset
    train = np.zeros(N_SAMPLES + len(t))
    np.add.at(train, np.round(onsets * FS).astype(int), 1.0)
    vec = fftconvolve(train[None, :], beat.T, axes=1)[:, offset: offset + N_SAMPLES].astype(np.float32)  # (3, N)

    time = np.arange(N_SAMPLES, dtype=np.float32) / FS
    wander = rng.uniform(0.02, 0.08) * np.sin(2 * np.pi * rng.uniform(0.1, 0.35) * time + rng.uniform(0, 6.3))
    vec += wander * _unit((1.0, 1.0, 0.3))[:, None]
    if af:
        f_wave = 0.05 * np.sin(2 * np.pi * rng.uniform(5, 7) * time + 0.6 * np.sin(2 * np.pi * 0.7 * time))
        vec += f_wave * _unit((-0.3, 0.5, 0.8))[:, None]

    adc = _twelve_leads(rng, vec)

    mean_rr = float(np.mean(np.diff(onsets))) if len(onsets) > 1 else rr
    measurements = _measurements(rng, beat, t, mean_rr, pr, p_dur, qrs_dur, qt, af, sentinel_p)
    return EcgSim(adc=adc, measurements=measurements,
                  statements=_statements(rng, 60 / mean_rr, af, ischaemia, qt, mean_rr, t_amp),
                  qrs_onsets=np.round(onsets * FS).astype(int))


def _axis(beat: np.ndarray, t: np.ndarray, lo: float, hi: float) -> int:
    """Frontal-plane axis of a wave from its net areas in leads I and aVF, degrees in (-90, 270]."""
    w = (t >= lo) & (t <= hi)
    x = float((beat[w] @ _LEAD_I).sum())
    y = float((beat[w] @ _LEAD_II).sum()) - x / 2  # aVF = II - I/2
    angle = np.degrees(np.arctan2(y / (np.sqrt(3) / 2), x))
    return int(round(angle + 360 if angle <= -90 else angle))


def _measurements(rng, beat, t, mean_rr, pr, p_dur, qrs_dur, qt, af, sentinel_p) -> dict[str, int]:
    p_on = int(round(rng.uniform(30, 60)))
    qrs_on = p_on + int(round(pr * 1000))
    m = {
        "rr_interval": int(round(mean_rr * 1000)),
        "p_onset": SENTINEL if af else p_on,
        "p_end": SENTINEL if af else p_on + int(round(p_dur * 1000)),
        "qrs_onset": qrs_on,
        "qrs_end": qrs_on + int(round(qrs_dur * 1000)),
        "t_end": qrs_on + int(round(qt * 1000)),
        "p_axis": SENTINEL if af else _axis(beat, t, -pr, -pr + p_dur),
        "qrs_axis": _axis(beat, t, 0, qrs_dur),
        "t_axis": _axis(beat, t, qrs_dur + 0.05, qt),
    }
    if rng.random() < sentinel_p:  # real carts occasionally fail to measure one value
        m[str(rng.choice(["p_axis", "t_axis", "t_end", "p_end"]))] = SENTINEL
    return m


def _statements(rng, hr: float, af: bool, ischaemia: int, qt: float, rr: float, t_amp: float) -> list[str]:
    out = []
    if af:
        out.append("Atrial fibrillation with rapid ventricular response" if hr > 100 else "Atrial fibrillation")
    elif hr > 100:
        out.append("Sinus tachycardia")
    elif hr < 60:
        out.append("Sinus bradycardia")
    else:
        out.append("Sinus rhythm")
    if ischaemia == ST_INFERIOR:
        out.append("Inferior ST elevation, consider acute infarct")
    elif ischaemia == ST_ANTERIOR:
        out.append("Anterior ST elevation, consider acute infarct")
    if t_amp < 0:
        out.append("T wave inversion")
    if qt / np.sqrt(rr) > 0.47:
        out.append("Prolonged QT interval")
    normal = len(out) == 1 and out[0] == "Sinus rhythm"
    if normal and rng.random() < 0.15:
        out.append("Borderline ECG")
    else:
        out.append("Normal ECG" if normal else "Abnormal ECG")
    return out
