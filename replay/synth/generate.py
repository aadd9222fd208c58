"""`generate(n, seed, out)`: the synthetic cohort written as MIMIC-IV 2.2 (`out/mimic-iv/hosp|icu`) and
MIMIC-IV-ECG 1.0 (`out/mimic-iv-ecg`). Stays are produced in chunks so memory stays bounded; every stay
draws from its own random stream, so the same seed always gives byte-identical files."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medm2t.events import LEADS
from medm2t.vocabulary import CVD_CLASSES
from replay.synth import dictionaries as d
from replay.synth.course import CVD_CHD, DAY, Cohort, make_cohort
from replay.synth.ecg_sim import ST_ANTERIOR, ST_INFERIOR, T_INVERSION, simulate
from replay.synth.vitals_labs import CHART_DECIMALS, HOUR, Rows, baseline, heart_rate, labs, vitals
from replay.synth.writer import CsvTable, ecg_relpath, epoch_to_datetime, write_wfdb

CHUNK = 200
ECG_COUNT_P = np.array([0.5, 0.3, 0.12, 0.05, 0.03])  # 0..4 ECGs per stay


@dataclass
class Summary:
    stays: int = 0
    deaths: int = 0
    cvd: dict[str, int] = field(default_factory=dict)
    ecgs: int = 0
    stays_with_ecg: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    mean_los_days: float = 0.0


def generate(n: int, seed: int, out: Path, progress: bool = True, compresslevel: int = 4,
             time_scale: float = 1.0) -> Summary:
    import polars as pl
    from tqdm import tqdm

    if n < 1:
        raise ValueError("the cohort needs at least one stay")
    out = Path(out)
    mimic, ecg_root = out / "mimic-iv", out / "mimic-iv-ecg"
    cohort = make_cohort(n, seed, time_scale)
    tables = {name: CsvTable(mimic / f"{name}.csv.gz", cols, compresslevel) for name, cols in d.COLUMNS.items()}
    record_list = CsvTable(ecg_root / "record_list.csv", d.ECG_RECORD_LIST_COLUMNS)
    machine = CsvTable(ecg_root / "machine_measurements.csv", d.ECG_MEASUREMENT_COLUMNS)
    _write_dictionaries(pl, tables)

    summary = Summary(stays=n, deaths=int(cohort.death.sum()), mean_los_days=float(cohort.los_days.mean()),
                      cvd={name: int((cohort.cvd == k).sum()) for k, name in enumerate(CVD_CLASSES)})
    hospital = _hospital(cohort)
    counters = {"labevent_id": 1, "specimen": 0}
    try:
        with tqdm(total=n, desc="synth stays", unit="stay", disable=not progress) as bar:
            for lo in range(0, n, CHUNK):
                idx = range(lo, min(lo + CHUNK, n))
                _write_chunk(pl, cohort, hospital, idx, tables, record_list, machine, ecg_root, counters, summary)
                bar.update(len(idx))
    finally:
        for table in [*tables.values(), record_list, machine]:
            table.close()
    summary.rows = {name: t.rows for name, t in tables.items()} | {"mimic-iv-ecg/record_list": record_list.rows}
    return summary


def _write_dictionaries(pl, tables: dict[str, CsvTable]) -> None:
    items = sorted(d.CHART_ITEMS.items())
    tables["icu/d_items"].write(pl.DataFrame({
        "itemid": [k for k, _ in items], "label": [v[0] for _, v in items], "abbreviation": [v[1] for _, v in items],
        "linksto": ["chartevents"] * len(items), "category": [v[2] for _, v in items],
        "unitname": [v[3] or None for _, v in items], "param_type": [v[4] for _, v in items],
        "lownormalvalue": [None] * len(items), "highnormalvalue": [None] * len(items),
    }, schema_overrides={"lownormalvalue": pl.Utf8, "highnormalvalue": pl.Utf8}))
    labs_ = sorted([(k, v[:3]) for k, v in d.LAB_ITEMS.items()] + [(d.URINE_NITRITE, d.URINE_NITRITE_ROW)])
    tables["hosp/d_labitems"].write(pl.DataFrame({
        "itemid": [k for k, _ in labs_], "label": [v[0] for _, v in labs_], "fluid": [v[1] for _, v in labs_],
        "category": [v[2] for _, v in labs_],
    }))


def _hospital(c: Cohort) -> dict[str, np.ndarray]:
    """Admission-level times and categories around each ICU stay (epoch seconds)."""
    rng = np.random.default_rng([c.seed, 2])
    n = c.n
    outtime = c.intime + np.round(c.los_days * DAY).astype(np.int64)
    admittime = c.intime - (rng.uniform(1, 30, n) * HOUR).astype(np.int64)
    died_in_icu = c.death & (rng.random(n) < 0.8)
    after_icu = c.time_scale * DAY  # the hospital stay after the ICU is scaled with the ICU stay
    deathtime = np.where(died_in_icu, outtime, outtime + (rng.uniform(0.5, 6, n) * after_icu).astype(np.int64))
    dischtime = np.where(c.death, deathtime, outtime + (rng.uniform(0.5, 7, n) * after_icu).astype(np.int64))
    later_death = ~c.death & (rng.random(n) < 0.08)
    dod = np.where(c.death, deathtime, np.where(later_death, dischtime + (rng.uniform(10, 365, n) * DAY).astype(np.int64), -1))
    loc = rng.choice(len(d.ADMISSION_LOCATIONS), n, p=d.ADMISSION_LOCATION_P)
    return {
        "outtime": outtime, "admittime": admittime, "deathtime": np.where(c.death, deathtime, -1), "dischtime": dischtime,
        "dod": dod, "location": loc, "type": rng.choice(len(d.ADMISSION_TYPES), n, p=d.ADMISSION_TYPE_P),
        "discharge": rng.choice(len(d.DISCHARGE_LOCATIONS), n, p=d.DISCHARGE_LOCATION_P),
        "insurance": rng.choice(len(d.INSURANCE), n, p=d.INSURANCE_P),
        "marital": rng.choice(len(d.MARITAL), n, p=d.MARITAL_P), "race": rng.choice(len(d.RACES), n, p=d.RACE_P),
        "english": rng.random(n) < 0.92, "provider": rng.integers(0, 36 ** 5, n),
        "ed_before": (rng.uniform(1, 8, n) * HOUR).astype(np.int64), "ed_after": (rng.uniform(0.2, 3, n) * HOUR).astype(np.int64),
        "careunit": rng.random(n), "transfer": rng.random(n) < 0.1,
    }


def _careunit(cvd_class: str, u: float) -> str:
    """The unit whose cumulative probability first exceeds the uniform draw `u`."""
    units = d.CAREUNITS[cvd_class]
    cum = np.cumsum([p for _, p in units])
    return units[min(int(np.searchsorted(cum, u * cum[-1], side="right")), len(units) - 1)][0]


def _times(pl, seconds: np.ndarray):
    """Epoch seconds → polars datetimes; -1 means missing."""
    s = pl.Series(np.asarray(seconds, dtype=np.int64))
    return pl.when(s >= 0).then(pl.from_epoch(s, time_unit="s")).otherwise(None)


def _provider(code: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    chars = []
    for _ in range(5):
        code, r = divmod(int(code), 36)
        chars.append(digits[r])
    return "P" + "".join(chars)


def _write_chunk(pl, c: Cohort, h: dict, idx: range, tables, record_list, machine, ecg_root: Path, counters, summary) -> None:
    ix = np.asarray(idx)
    tables["hosp/patients"].write(pl.DataFrame({
        "subject_id": c.subject_id[ix], "gender": np.where(c.male[ix], "M", "F"), "anchor_age": c.age[ix],
        "anchor_year": c.anchor_year[ix],
        "anchor_year_group": [d.ANCHOR_YEAR_GROUPS[int(s) % 5] for s in c.subject_id[ix]],
    }).with_columns(dod=_times(pl, h["dod"][ix]).dt.date()))

    ed = np.asarray(h["location"][ix]) == 0
    tables["hosp/admissions"].write(pl.DataFrame({
        "subject_id": c.subject_id[ix], "hadm_id": c.hadm_id[ix],
        "admission_type": [d.ADMISSION_TYPES[k] for k in h["type"][ix]],
        "admit_provider_id": [_provider(p) for p in h["provider"][ix]],
        "admission_location": [d.ADMISSION_LOCATIONS[k] for k in h["location"][ix]],
        "discharge_location": [("DIED" if dead else d.DISCHARGE_LOCATIONS[k]) for k, dead in zip(h["discharge"][ix], c.death[ix])],
        "insurance": [d.INSURANCE[k] for k in h["insurance"][ix]],
        "language": np.where(h["english"][ix], "ENGLISH", "?"),
        "marital_status": [d.MARITAL[k] or None for k in h["marital"][ix]],
        "race": [d.RACES[k] for k in h["race"][ix]],
        "hospital_expire_flag": c.death[ix].astype(int),
    }).with_columns(
        admittime=_times(pl, h["admittime"][ix]), dischtime=_times(pl, h["dischtime"][ix]),
        deathtime=_times(pl, h["deathtime"][ix]),
        edregtime=_times(pl, np.where(ed, h["admittime"][ix] - h["ed_before"][ix], -1)),
        edouttime=_times(pl, np.where(ed, h["admittime"][ix] + h["ed_after"][ix], -1)),
    ))

    first = [_careunit(CVD_CLASSES[k], u) for k, u in zip(c.cvd[ix], h["careunit"][ix])]
    last = [d.CAREUNITS["none"][0][0] if t else f for f, t in zip(first, h["transfer"][ix])]
    tables["icu/icustays"].write(pl.DataFrame({
        "subject_id": c.subject_id[ix], "hadm_id": c.hadm_id[ix], "stay_id": c.stay_id[ix],
        "first_careunit": first, "last_careunit": last,
        "los": (h["outtime"][ix] - c.intime[ix]) / DAY,
    }).with_columns(intime=_times(pl, c.intime[ix]), outtime=_times(pl, h["outtime"][ix])))

    dx, px, chart, lab, ecg_rows, mm_rows = [], [], [], [], [], []
    for i in idx:
        rng = c.stay_rng(i)
        base = baseline(rng, c, i)
        v = vitals(rng, c, i, base)
        lab_rows, gas_rows = labs(rng, c, i, base)
        chart.append((i, Rows.concat([v, gas_rows])))
        lab.append((i, lab_rows))
        dx.extend(_diagnoses(rng, c, i))
        px.extend(_procedures(rng, c, i, h))
        n_ecg = _ecgs(rng, c, i, base, ecg_root, ecg_rows, mm_rows)
        summary.ecgs += n_ecg
        summary.stays_with_ecg += n_ecg > 0

    tables["hosp/diagnoses_icd"].write(pl.DataFrame(dx, schema=list(d.COLUMNS["hosp/diagnoses_icd"]), orient="row"))
    tables["hosp/procedures_icd"].write(pl.DataFrame(px, schema=["subject_id", "hadm_id", "seq_num", "chartdate_s", "icd_code",
                                                                "icd_version"], orient="row")
                                        .with_columns(chartdate=pl.from_epoch("chartdate_s", time_unit="s").dt.date()))
    tables["icu/chartevents"].write(_chart_frame(pl, c, chart))
    tables["hosp/labevents"].write(_lab_frame(pl, c, lab, counters))
    if ecg_rows:
        record_list.write(pl.DataFrame(ecg_rows, schema=list(d.ECG_RECORD_LIST_COLUMNS), orient="row"))
        machine.write(pl.DataFrame(mm_rows, schema={k: (pl.Int64 if k in ("subject_id", "study_id", "cart_id") or k in
                                                        d.ECG_MEASUREMENT_COLUMNS[-9:] else pl.Utf8)
                                                    for k in d.ECG_MEASUREMENT_COLUMNS}, orient="row"))


def _numbers(pl, values: np.ndarray, decimals: np.ndarray):
    """Numbers as MIMIC writes them: '80' for integer items, '98.6' / '7.38' otherwise; null for NaN."""
    scale = 10.0 ** decimals
    rounded = np.round(values * scale) / scale
    s = pl.Series(rounded)
    return (pl.when(s.is_nan()).then(None)
            .when(pl.Series(decimals) == 0).then(s.round(0).cast(pl.Int64, strict=False).cast(pl.Utf8))
            .otherwise(s.cast(pl.Utf8)))


def _chart_frame(pl, c: Cohort, parts):
    sizes = [len(r.time) for _, r in parts]
    rows = Rows.concat([r for _, r in parts])
    owner = np.repeat([i for i, _ in parts], sizes)
    dec = np.array([CHART_DECIMALS[int(k)] for k in rows.itemid]) if len(rows.itemid) else np.zeros(0)
    order = np.lexsort((rows.itemid, rows.time, owner))
    rows = Rows(*(getattr(rows, f)[order] for f in ("time", "store", "itemid", "valuenum", "text", "group")))
    owner, dec = owner[order], dec[order]
    caregiver = 10_000 + (c.stay_id[owner] * 7 + rows.time // (8 * HOUR)) % 90_000  # one nurse per 8-hour shift
    frame = pl.DataFrame({
        "subject_id": c.subject_id[owner], "hadm_id": c.hadm_id[owner], "stay_id": c.stay_id[owner],
        "caregiver_id": caregiver, "itemid": rows.itemid, "text": pl.Series(rows.text.tolist(), dtype=pl.Utf8),
        "valueuom": [d.CHART_UOM[int(k)] or None for k in rows.itemid], "warning": np.zeros(len(owner), dtype=np.int64),
    }).with_columns(num=_numbers(pl, rows.valuenum, dec), charttime=_times(pl, _round(c.intime[owner] + rows.time, 60)),
                    storetime=_times(pl, _round(c.intime[owner] + rows.store, 60)))
    return frame.with_columns(value=pl.coalesce("text", "num"), valuenum=pl.col("num"))


def _round(seconds: np.ndarray, unit: int) -> np.ndarray:
    """MIMIC charts to the minute."""
    return seconds // unit * unit


def _lab_frame(pl, c: Cohort, parts, counters):
    sizes = [len(r.time) for _, r in parts]
    rows = Rows.concat([r for _, r in parts])
    owner = np.repeat([i for i, _ in parts], sizes)
    n = len(owner)
    meta = [d.LAB_ITEMS.get(int(k)) for k in rows.itemid]
    dec = np.array([m[6] if m else 0 for m in meta])
    lower = np.array([m[4] if m else np.nan for m in meta])
    upper = np.array([m[5] if m else np.nan for m in meta])
    abnormal = (rows.valuenum < lower) | (rows.valuenum > upper)
    nitrite_pos = rows.text == "POS"
    # specimen: one per (stay, draw group)
    keys = owner.astype(np.int64) * 10_000 + rows.group
    _, specimen = np.unique(keys, return_inverse=True)
    specimen = 10_000_000 + (counters["specimen"] + specimen) * 37 % 89_999_999
    counters["specimen"] += int(specimen.max() - specimen.min() + 1) if n else 0
    ids = np.arange(counters["labevent_id"], counters["labevent_id"] + n)
    counters["labevent_id"] += n
    sev_stat = c.s0[owner] > 1.0
    troponin = (rows.itemid == 51003) & (np.nan_to_num(rows.valuenum) > 0.1)
    frame = pl.DataFrame({
        "labevent_id": ids, "subject_id": c.subject_id[owner], "hadm_id": c.hadm_id[owner], "specimen_id": specimen,
        "itemid": rows.itemid, "order_provider_id": pl.Series([None] * n, dtype=pl.Utf8),
        "text": pl.Series(rows.text.tolist(), dtype=pl.Utf8),
        "valueuom": [m[3] if m else None for m in meta],
        "ref_range_lower": [f"{m[4]:g}" if m else None for m in meta],
        "ref_range_upper": [f"{m[5]:g}" if m else None for m in meta],
        "flag": pl.Series(np.where(abnormal | nitrite_pos, "abnormal", None).tolist(), dtype=pl.Utf8),
        "priority": np.where(sev_stat, "STAT", "ROUTINE"),
        "comments": pl.Series(np.where(troponin, "cTropnT > 0.10 ng/mL suggests Acute MI.", None).tolist(), dtype=pl.Utf8),
    }).with_columns(num=_numbers(pl, rows.valuenum, dec), charttime=_times(pl, _round(c.intime[owner] + rows.time, 60)),
                    storetime=_times(pl, _round(c.intime[owner] + rows.store, 60)))
    return frame.with_columns(value=pl.coalesce("text", "num"), valuenum=pl.col("num"))


def _diagnoses(rng, c: Cohort, i: int) -> list[tuple]:
    cls = CVD_CLASSES[int(c.cvd[i])]
    codes = [str(rng.choice(d.PRIMARY_CODES[cls]))]
    n_sec = int(rng.integers(2, 9))
    secondary = [str(s) for s in rng.choice(d.SECONDARY_CODES, size=n_sec, replace=False)]
    if c.af[i] and "I480" not in secondary and "I482" not in secondary:
        secondary.append("I480")
    if cls == "none" and rng.random() < 0.15:  # CVD only as a secondary diagnosis: not a CVD admission
        secondary.append(str(rng.choice(d.PRIMARY_CODES["hf"] + d.PRIMARY_CODES["chd"])))
    codes += [s for s in secondary if s != codes[0]]
    return [(int(c.subject_id[i]), int(c.hadm_id[i]), k + 1, code, 10) for k, code in enumerate(codes)]


def _procedures(rng, c: Cohort, i: int, h: dict) -> list[tuple]:
    codes = []
    if c.cvd[i] == CVD_CHD and rng.random() < 0.45:
        codes.append(str(rng.choice(d.PCI_CODES if rng.random() < 0.7 else d.CABG_CODES)))
    if c.s0[i] > 1.5 or rng.random() < 0.3:
        codes += [str(s) for s in rng.choice(d.OTHER_PROCEDURES, size=int(rng.integers(1, 3)), replace=False)]
    day = (c.intime[i] + rng.integers(0, max(1, int(c.los_days[i] * DAY)), len(codes))) // DAY * DAY
    return [(int(c.subject_id[i]), int(c.hadm_id[i]), k + 1, int(day[k]), code, 10) for k, code in enumerate(codes)]


def _ecgs(rng, c: Cohort, i: int, base, ecg_root: Path, ecg_rows: list, mm_rows: list) -> int:
    p = ECG_COUNT_P if c.cvd[i] != CVD_CHD else np.array([0.2, 0.35, 0.25, 0.12, 0.08])
    count = int(rng.choice(5, p=p))
    if count == 0:
        return 0
    los = c.los_days[i] * DAY
    first = -rng.uniform(0, 6) * HOUR if rng.random() < 0.1 else rng.uniform(0.05, min(24, los / HOUR)) * HOUR
    times = np.sort(np.concatenate([[first], rng.uniform(0, los, count - 1)])).astype(np.int64)
    for k, t in enumerate(times):
        study_id = int(c.study_base[i]) + k
        sev = float(c.severity(i, np.array([max(t, 0) / DAY]))[0])
        af = bool(c.af[i]) and rng.random() < 0.85
        isch = int(c.ischaemia[i])
        if isch in (ST_INFERIOR, ST_ANTERIOR) and t > 2 * DAY:
            isch = T_INVERSION  # ST elevation evolves into T inversion
        sim = simulate(rng, float(heart_rate(base, np.array([sev]), af)[0] + rng.normal(0, 4)), af, isch)
        when = epoch_to_datetime(int(c.intime[i] + t) // 60 * 60)
        rel = ecg_relpath(int(c.subject_id[i]), study_id)
        write_wfdb(ecg_root / rel, sim.adc, LEADS, when)
        ecg_time = when.strftime("%Y-%m-%d %H:%M:%S")
        ecg_rows.append((int(c.subject_id[i]), study_id, str(study_id), ecg_time, rel))
        reports = (sim.statements + [None] * 18)[:18]
        mm_rows.append((int(c.subject_id[i]), study_id, int(6_800_000 + (study_id % 997)), ecg_time, *reports,
                        "0.005-150 Hz", "60 Hz notch  Baseline filter", *(sim.measurements[col] for col in d.ECG_MEASUREMENT_COLUMNS[-9:])))
    return count
