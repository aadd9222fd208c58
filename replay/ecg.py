"""12-lead ECGs: one WFDB record → a standard (12, n) mV array at 500 Hz, and the MIMIC-IV-ECG archive
(record_list.csv + machine_measurements.csv + WFDB files) → canonical `Ecg` events per ICU stay.

Records from other 12-lead sources load too: PhysioNet `.dat` (PTB-XL, PTB Diagnostic), CinC-challenge
`.mat` files (a WFDB signal file with a 24-byte offset declared in the `.hea`), any sampling rate,
`mV`/`mv`/`uV` units and lead names in any case.
"""
from __future__ import annotations

import csv
import math
import re
from bisect import bisect_left, bisect_right
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from medm2t.events import ECG_MEASUREMENTS, LEADS, Ecg, Waveform, make_event_id

TARGET_FS = 500.0
SOURCE = "mimic-iv-ecg"
# MIMIC-IV-ECG fills a measurement the cart could not compute with one of these.
SENTINELS = frozenset({29999.0, 32767.0, 65535.0})
N_REPORTS = 18

_LEAD_BY_KEY = {lead.lower(): lead for lead in LEADS}
_UNIT_TO_MV = {"mv": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3, "v": 1e3}


class EcgReadError(ValueError):
    """A WFDB record that cannot be used; the message names the file."""


@dataclass
class EcgRecord:
    signal: np.ndarray            # (12, n) float32 mV, rows in medm2t.events.LEADS order
    fs: float = TARGET_FS
    leads: tuple[str, ...] = LEADS
    warnings: list[str] = field(default_factory=list)


def normalise_lead(name: str) -> str | None:
    """'AVR', 'avr', 'aVR' → 'aVR'; a non-standard lead (e.g. Frank 'vx') → None."""
    return _LEAD_BY_KEY.get(name.strip().lower())


def read_ecg_record(path: str | Path) -> EcgRecord:
    """Load one WFDB record given its path without extension. Raises EcgReadError naming the file when
    the header or signal file is missing, truncated or unreadable, or no standard lead is present."""
    path = Path(path)
    base = path.with_suffix("") if path.suffix == ".hea" else path
    name = f"{base}.hea"
    raw = _read_format16(base, name)
    if raw is None:
        raw = _read_with_wfdb(base, name)
    p_signal, fs, sig_names, units = raw
    return _standardise(p_signal, fs, sig_names, units, name)


def _read_with_wfdb(base: Path, name: str) -> tuple[np.ndarray, float, list[str], list[str]]:
    import wfdb

    try:
        record = wfdb.rdrecord(str(base), physical=True)
    except FileNotFoundError as exc:
        raise EcgReadError(f"{name}: WFDB file missing ({exc.filename or exc})") from exc
    except Exception as exc:  # wfdb raises bare ValueError/IndexError/struct errors for broken files
        raise EcgReadError(f"{name}: unreadable WFDB record ({type(exc).__name__}: {exc})") from exc
    if record.p_signal is None or record.p_signal.ndim != 2 or not record.fs:
        raise EcgReadError(f"{name}: WFDB record has no physical signal or sampling rate")
    return record.p_signal, float(record.fs), list(record.sig_name), list(record.units or [])


_FMT16 = re.compile(r"^16(?:x1)?(?:\+(\d+))?$")
_GAIN = re.compile(r"^([-+\d.eE]+)(?:\(([-\d]+)\))?(?:/(\S+))?$")


def _read_format16(base: Path, name: str) -> tuple[np.ndarray, float, list[str], list[str]] | None:
    """Fast path for the common case (all of MIMIC-IV-ECG, PTB-XL and the CinC sets): one signal file in
    format 16, optionally with a byte offset. wfdb.rdrecord costs ~50 ms per record in header parsing alone;
    this costs ~1 ms. Returns None for anything else, which then goes through wfdb."""
    try:
        lines = [ln.strip() for ln in Path(name).read_text(errors="replace").splitlines()]
    except FileNotFoundError as exc:
        raise EcgReadError(f"{name}: WFDB file missing ({exc.filename or name})") from exc
    lines = [ln for ln in lines if ln and not ln.startswith("#")]
    try:
        head = lines[0].split()
        n_sig, fs_text, n = int(head[1]), head[2], int(head[3])
        fs = float(fs_text.split("/")[0].split("(")[0])
        specs = [ln.split(maxsplit=8) for ln in lines[1: 1 + n_sig]]
    except (IndexError, ValueError):
        return None
    if "/" in head[0] or len(specs) != n_sig or n_sig == 0 or any(len(sp) < 3 for sp in specs):
        return None
    files = {sp[0] for sp in specs}
    fmts = [_FMT16.match(sp[1]) for sp in specs]
    if len(files) != 1 or not all(fmts) or len({m.group(1) for m in fmts}) != 1:
        return None
    offset = int(fmts[0].group(1) or 0)
    gains, baselines, units, names = [], [], [], []
    for sp in specs:
        g = _GAIN.match(sp[2])
        if not g:
            return None
        adc_zero = int(sp[4]) if len(sp) > 4 and sp[4].lstrip("-").isdigit() else 0
        gains.append(float(g.group(1)) or 200.0)  # WFDB: gain 0 means the default, 200 adu per unit
        baselines.append(int(g.group(2)) if g.group(2) is not None else adc_zero)
        units.append(g.group(3) or "mV")
        names.append(sp[8].strip() if len(sp) > 8 else f"sig{len(names)}")
    dat = base.parent / next(iter(files))
    try:
        data = np.fromfile(dat, dtype="<i2", offset=offset)
    except FileNotFoundError as exc:
        raise EcgReadError(f"{name}: WFDB file missing ({dat})") from exc
    if data.size < n * n_sig:
        raise EcgReadError(f"{name}: signal file {dat.name} is truncated ({data.size // max(n_sig, 1)} of {n} samples)")
    ints = data[: n * n_sig].reshape(n, n_sig)
    p_signal = (ints - np.asarray(baselines, dtype=np.float64)) / np.asarray(gains)
    p_signal[ints == -32768] = np.nan  # format 16's "no sample" code
    return p_signal, fs, names, units


def _standardise(p_signal: np.ndarray, fs: float, sig_names: list[str], units: list[str], name: str) -> EcgRecord:
    warnings: list[str] = []
    n = p_signal.shape[0]
    signal = np.full((len(LEADS), n), np.nan, dtype=np.float64)
    found: set[str] = set()
    for col, raw_name in enumerate(sig_names):
        unit = units[col] if col < len(units) else "mV"
        lead = normalise_lead(raw_name)
        if lead is None or lead in found:
            continue  # extra channels (Frank vx/vy/vz, rhythm strips) or a repeated lead
        scale = _UNIT_TO_MV.get((unit or "mV").strip().lower())
        if scale is None:
            warnings.append(f"{name}: lead {raw_name} has unknown unit {unit!r}; assumed mV")
            scale = 1.0
        signal[LEADS.index(lead)] = p_signal[:, col] * scale
        found.add(lead)
    if not found:
        raise EcgReadError(f"{name}: none of the 12 standard leads among signals {list(sig_names)}")
    missing = [lead for lead in LEADS if lead not in found]
    if missing:
        warnings.append(f"{name}: missing leads {', '.join(missing)} (stored as NaN)")
    present = [LEADS.index(lead) for lead in LEADS if lead in found]
    n_nan = int(np.isnan(signal[present]).sum())
    if n_nan:
        warnings.append(f"{name}: {n_nan} NaN samples in present leads")

    if fs != TARGET_FS:
        signal = _resample(signal, fs, present)
    return EcgRecord(signal=signal.astype(np.float32), fs=TARGET_FS, leads=LEADS, warnings=warnings)


def _resample(signal: np.ndarray, fs: float, present: list[int]) -> np.ndarray:
    from scipy.signal import resample_poly

    ratio = Fraction(TARGET_FS / fs).limit_denominator(1000)
    n_out = int(round(signal.shape[1] * TARGET_FS / fs))
    out = np.full((signal.shape[0], n_out), np.nan)
    rows = signal[present]
    nan = np.isnan(rows)
    if nan.any():  # resample_poly spreads one NaN over a whole filter length: interpolate, then re-mark
        idx = np.arange(rows.shape[1])
        for r in range(rows.shape[0]):
            if nan[r].all():
                rows[r] = 0.0
            elif nan[r].any():
                rows[r, nan[r]] = np.interp(idx[nan[r]], idx[~nan[r]], rows[r, ~nan[r]])
    res = resample_poly(rows, ratio.numerator, ratio.denominator, axis=1)[:, :n_out]
    if nan.any():
        src = np.minimum((np.arange(res.shape[1]) * fs / TARGET_FS).astype(int), nan.shape[1] - 1)
        res[nan[:, src]] = np.nan
    out[present, : res.shape[1]] = res
    return out


# ---- machine measurements and reports ----------------------------------------------------------------


def clean_measurement(raw: str | float | None) -> float | None:
    """A machine measurement as a number, or None for empty, non-numeric, NaN or sentinel values."""
    if raw is None:
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        return None
    if math.isnan(value) or value in SENTINELS:
        return None
    return value


_SPACES = re.compile(r"\s+")


def clean_statement(raw: str | None) -> str | None:
    """'  --- Sinus  rhythm. ' → 'Sinus rhythm'; empty → None."""
    if raw is None:
        return None
    text = _SPACES.sub(" ", str(raw)).strip().strip("-.").strip()
    return text or None


def statements_from_reports(row: dict[str, str]) -> tuple[str, ...]:
    out = []
    for i in range(N_REPORTS):
        text = clean_statement(row.get(f"report_{i}"))
        if text:
            out.append(text)
    return tuple(out)


# ---- the MIMIC-IV-ECG archive ------------------------------------------------------------------------


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.strip())


@dataclass(frozen=True, slots=True)
class _Study:
    time: datetime
    study_id: int
    path: str


class EcgArchive:
    """MIMIC-IV-ECG (or the synthetic cohort's copy of its layout) indexed by subject.

    The two CSVs are read once, on first use; WFDB files are read only for ECGs asked for."""

    def __init__(self, root: Path, warn: Callable[[str], None]):
        self.root = Path(root)
        self.warn = warn
        self._by_subject: dict[int, list[_Study]] | None = None
        # study_id -> (9 cleaned measurements, statements); kept parsed so full MIMIC (~800k ECGs) fits in memory
        self._measurements: dict[int, tuple[tuple[float | None, ...], tuple[str, ...]]] = {}

    def _load(self) -> dict[int, list[_Study]]:
        if self._by_subject is not None:
            return self._by_subject
        record_list = self.root / "record_list.csv"
        if not record_list.exists():
            raise FileNotFoundError(f"{record_list}: MIMIC-IV-ECG record list not found")
        by_subject: dict[int, list[_Study]] = defaultdict(list)
        with open(record_list, newline="") as fh:
            for line_no, row in enumerate(csv.DictReader(fh), start=2):
                try:
                    by_subject[int(row["subject_id"])].append(
                        _Study(_parse_time(row["ecg_time"]), int(row["study_id"]), row["path"].strip())
                    )
                except (KeyError, TypeError, ValueError) as exc:
                    self.warn(f"{record_list}:{line_no}: skipped bad row ({type(exc).__name__}: {exc})")
        for studies in by_subject.values():
            studies.sort(key=lambda s: (s.time, s.study_id))
        self._by_subject = dict(by_subject)

        mm = self.root / "machine_measurements.csv"
        if mm.exists():
            interned: dict[str, str] = {}
            with open(mm, newline="") as fh:
                for line_no, row in enumerate(csv.DictReader(fh), start=2):
                    try:
                        study_id = int(row["study_id"])
                    except (KeyError, TypeError, ValueError):
                        self.warn(f"{mm}:{line_no}: skipped row without a valid study_id")
                        continue
                    values = tuple(clean_measurement(row.get(name)) for name in ECG_MEASUREMENTS)
                    statements = tuple(interned.setdefault(t, t) for t in statements_from_reports(row))
                    self._measurements[study_id] = (values, statements)
        else:
            self.warn(f"{mm}: not found; ECGs carry no machine measurements or statements")
        return self._by_subject

    def events_for_stay(self, stay_id: int, subject_id: int, start: datetime, end: datetime) -> list[Ecg]:
        """The subject's ECGs with start <= ecg_time <= end, oldest first; unreadable ones are warned and skipped."""
        studies = self._load().get(int(subject_id), [])
        times = [s.time for s in studies]
        chosen = studies[bisect_left(times, start): bisect_right(times, end)]
        events = []
        for study in chosen:
            event = self._event(study, stay_id, int(subject_id))
            if event is not None:
                events.append(event)
        return events

    def _event(self, study: _Study, stay_id: int, subject_id: int) -> Ecg | None:
        try:
            record = read_ecg_record(self.root / study.path)
        except EcgReadError as exc:
            self.warn(f"ECG study {study.study_id} skipped: {exc}")
            return None
        for text in record.warnings:
            self.warn(f"ECG study {study.study_id}: {text}")
        values, statements = self._measurements.get(study.study_id, ((None,) * len(ECG_MEASUREMENTS), ()))
        return Ecg(
            event_id=make_event_id(SOURCE, study.study_id),
            stay_id=stay_id,
            subject_id=subject_id,
            time=study.time,
            available_time=study.time,
            source=SOURCE,
            study_id=study.study_id,
            waveform=Waveform.from_array(record.signal, fs=record.fs, leads=record.leads),
            measurements=dict(zip(ECG_MEASUREMENTS, values)),
            statements=statements,
            quality=tuple(record.warnings),
        )
