"""`medm2t synth`: MIMIC-IV / MIMIC-IV-ECG layout, physiologically consistent ECGs, plausible outcome rates,
byte-identical output for a seed."""
from __future__ import annotations

import csv
import gzip
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import wfdb

from medm2t.cli import main
from medm2t.events import LEADS
from replay.ecg import EcgArchive
from replay.synth import dictionaries as d
from replay.synth import generate
from replay.synth.ecg_sim import ST_INFERIOR, simulate
from tests.helpers.paths import SHARED_DATA

DEMO = SHARED_DATA / "mimic-iv-demo-2.2"
N = 300


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(N, 11, out, progress=False)
    return out


def _read(cohort: Path, table: str) -> pl.DataFrame:
    return pl.read_csv(cohort / "mimic-iv" / f"{table}.csv.gz", infer_schema_length=100_000)


def _header(path: Path) -> list[str]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt") as fh:
        return fh.readline().rstrip("\n").split(",")


def test_headers_equal_the_real_mimic_demo(cohort):
    if not DEMO.exists():
        pytest.skip(f"{DEMO} is absent (shared MIMIC-IV demo sits beside the repo on dev machines and CI)")
    for table in d.COLUMNS:
        real = DEMO / f"{table}.csv.gz"
        if not real.exists():  # the demo lacks chartevents
            continue
        assert _header(cohort / "mimic-iv" / f"{table}.csv.gz") == _header(real), table
    assert _header(cohort / "mimic-iv" / "icu/chartevents.csv.gz") == [
        "subject_id", "hadm_id", "stay_id", "caregiver_id", "charttime", "storetime", "itemid", "value", "valuenum",
        "valueuom", "warning"]


def test_tables_are_consistent_and_use_real_itemids(cohort):
    stays, adm, pts = _read(cohort, "icu/icustays"), _read(cohort, "hosp/admissions"), _read(cohort, "hosp/patients")
    assert stays.height == adm.height == pts.height == N
    assert stays["stay_id"].n_unique() == N and set(stays["hadm_id"]) == set(adm["hadm_id"])
    chart, labs = _read(cohort, "icu/chartevents"), _read(cohort, "hosp/labevents")
    assert set(chart["itemid"]) <= set(_read(cohort, "icu/d_items")["itemid"]) == set(d.CHART_ITEMS)
    assert set(labs["itemid"]) <= set(_read(cohort, "hosp/d_labitems")["itemid"])
    assert labs["labevent_id"].n_unique() == labs.height
    assert {220045, 220179, 220180, 220181, 220210, 220277, 223761, 223762, 223835, 220739, 223900, 223901} <= set(chart["itemid"])

    times = ["charttime", "storetime"]
    chart = chart.with_columns(pl.col(times).str.to_datetime("%Y-%m-%d %H:%M:%S"))
    delay = (chart["storetime"] - chart["charttime"]).dt.total_minutes()
    assert delay.min() >= 1 and delay.max() <= 30
    labs = labs.with_columns(pl.col(times).str.to_datetime("%Y-%m-%d %H:%M:%S"))
    delay = (labs["storetime"] - labs["charttime"]).dt.total_minutes()
    assert delay.min() >= 30 and delay.max() <= 120

    # Values in realistic ranges and in MIMIC units (°F for 223761).
    ranges = {220045: (30, 220), 220179: (50, 240), 220277: (60, 100), 223761: (93, 108), 223762: (34, 42)}
    for itemid, (lo, hi) in ranges.items():
        v = chart.filter(pl.col("itemid") == itemid)["valuenum"].cast(pl.Float64)
        assert lo <= v.min() and v.max() <= hi, itemid
    gcs = chart.filter(pl.col("itemid") == 220739)
    assert set(gcs["value"]) <= set(d.GCS_TEXT[220739].values())
    hr_per_stay_day = chart.filter(pl.col("itemid") == 220045).height / stays["los"].sum()
    assert 18 < hr_per_stay_day < 25  # about hourly with some missing
    draws_per_day = labs["specimen_id"].n_unique() / stays["los"].sum()
    assert 1 < draws_per_day < 8  # a panel every 4-24 h, split into chemistry / blood count / other specimens


def test_outcome_rates_are_roughly_right(cohort):
    adm, stays = _read(cohort, "hosp/admissions"), _read(cohort, "icu/icustays")
    assert 0.05 <= adm["hospital_expire_flag"].mean() <= 0.17
    los = stays["los"]
    assert 3.0 <= los.mean() <= 5.5 and los.median() < los.mean()  # right-skewed
    dx = _read(cohort, "hosp/diagnoses_icd").filter(pl.col("seq_num") == 1)
    px = _read(cohort, "hosp/procedures_icd")
    cvd_prefix = ("I21", "I22", "I251", "I257", "I258", "I63", "I65", "I66", "I50", "I130", "I132")
    cvd_hadm = set(dx.filter(pl.col("icd_code").str.starts_with(cvd_prefix[0]) | pl.any_horizontal(
        [pl.col("icd_code").str.starts_with(p) for p in cvd_prefix]))["hadm_id"])
    cvd_hadm |= set(px.filter(pl.col("icd_code").str.slice(0, 4).is_in(["0210", "0211", "0212", "0213", "0270", "0271",
                                                                          "0272", "0273"]))["hadm_id"])
    assert 0.15 <= len(cvd_hadm) / N <= 0.35
    dead = adm.filter(pl.col("hospital_expire_flag") == 1)
    assert (dead["deathtime"] == dead["dischtime"]).all() and adm.filter(pl.col("hospital_expire_flag") == 0)["deathtime"].is_null().all()


def test_mortality_is_learnable_but_not_trivial_from_first_day_vitals(cohort):
    from sklearn.metrics import roc_auc_score

    stays = _read(cohort, "icu/icustays").with_columns(pl.col("intime").str.to_datetime())
    chart = _read(cohort, "icu/chartevents").with_columns(pl.col("charttime").str.to_datetime())
    first_day = (chart.join(stays.select("stay_id", "intime"), on="stay_id")
                 .filter((pl.col("charttime") - pl.col("intime")).dt.total_hours() < 24))
    feats = first_day.filter(pl.col("itemid").is_in([220045, 220210, 220277])).group_by("stay_id").agg(
        hr=pl.col("valuenum").filter(pl.col("itemid") == 220045).cast(pl.Float64).mean(),
        rr=pl.col("valuenum").filter(pl.col("itemid") == 220210).cast(pl.Float64).mean(),
        spo2=pl.col("valuenum").filter(pl.col("itemid") == 220277).cast(pl.Float64).mean())
    y = stays.join(_read(cohort, "hosp/admissions").select("hadm_id", "hospital_expire_flag"), on="hadm_id") \
        .join(feats, on="stay_id")
    score = (y["hr"] / 10 + y["rr"] / 2 - y["spo2"] / 1.5).to_numpy()
    auc = roc_auc_score(y["hospital_expire_flag"].to_numpy(), score)
    assert 0.65 < auc < 0.97


def test_every_ecg_loads_with_wfdb_and_obeys_the_lead_identities(cohort):
    root = cohort / "mimic-iv-ecg"
    rows = list(csv.DictReader(open(root / "record_list.csv")))
    stays_with_ecg = {r["subject_id"] for r in rows}
    assert 0.35 <= len(stays_with_ecg) / N <= 0.7
    assert max(np.unique([r["subject_id"] for r in rows], return_counts=True)[1]) <= 4
    step = 1 / 200  # one adc unit in mV
    for r in rows:
        assert r["path"] == f"files/p{r['subject_id'][:4]}/p{r['subject_id']}/s{r['study_id']}/{r['study_id']}"
        rec = wfdb.rdrecord(str(root / r["path"]))
        assert rec.fs == 500 and rec.sig_len == 5000 and rec.sig_name == list(LEADS) and rec.fmt == ["16"] * 12
        x = {lead: rec.p_signal[:, k] for k, lead in enumerate(LEADS)}
        assert np.abs(x["I"] + x["III"] - x["II"]).max() <= 2 * step
        assert np.abs(x["aVR"] + (x["I"] + x["II"]) / 2).max() <= 2 * step
        assert np.abs(x["aVL"] - (x["I"] - x["II"] / 2)).max() <= 2 * step
        assert np.abs(x["aVF"] - (x["II"] - x["I"] / 2)).max() <= 2 * step
        assert 0.3 < np.ptp(x["II"]) < 5


def test_ecg_archive_reads_the_synthetic_ecgs_with_measurements_and_statements(cohort):
    root = cohort / "mimic-iv-ecg"
    warnings: list[str] = []
    archive = EcgArchive(root, warnings.append)
    stays = _read(cohort, "icu/icustays").with_columns(pl.col("intime", "outtime").str.to_datetime()).head(150)
    events = []
    for s in stays.iter_rows(named=True):
        events += archive.events_for_stay(s["stay_id"], s["subject_id"], s["intime"], s["outtime"])
    records = pl.read_csv(root / "record_list.csv").with_columns(pl.col("ecg_time").str.to_datetime())
    in_stay = records.join(stays, on="subject_id").filter(pl.col("ecg_time").is_between("intime", "outtime"))
    assert not warnings and len(events) == in_stay.height
    assert in_stay.height < records.join(stays, on="subject_id").height  # some ECGs precede ICU admission
    statements = [e.statements for e in events]
    assert any("Atrial fibrillation" in s[0] for s in statements) and any(s[0] == "Sinus rhythm" for s in statements)
    for e in events:
        af = e.statements[0].startswith("Atrial fibrillation")
        assert (e.measurements["p_onset"] is None) == af  # no P wave to measure in atrial fibrillation
        assert 250 <= e.measurements["rr_interval"] <= 1800


@pytest.mark.parametrize("hr", [55, 80, 130])
def test_ecg_rate_follows_heart_rate_and_af_is_irregular(hr):
    sinus = simulate(np.random.default_rng(hr), hr, af=False, ischaemia=0, sentinel_p=0)
    assert abs(sinus.measurements["rr_interval"] - 60_000 / hr) < 0.05 * 60_000 / hr
    af = simulate(np.random.default_rng(hr), hr, af=True, ischaemia=0, sentinel_p=0)
    assert af.measurements["p_onset"] == 29999 and af.statements[0].startswith("Atrial fibrillation")
    assert abs(len(sinus.qrs_onsets) - hr / 6) <= 2  # beats in 10 s
    # The beats really are in the signal: lead II rises steeply within 50 ms after each QRS onset.
    slope = np.diff(sinus.adc[1].astype(float))
    for on in sinus.qrs_onsets[(sinus.qrs_onsets > 0) & (sinus.qrs_onsets < 4900)]:
        assert slope[on: on + 25].max() > 0.5 * slope.max()
    rr_af = np.diff(af.qrs_onsets) / 500
    rr_sinus = np.diff(sinus.qrs_onsets) / 500
    assert np.std(rr_af) / np.mean(rr_af) > 2 * np.std(rr_sinus) / np.mean(rr_sinus)


def test_inferior_st_elevation_shows_in_the_inferior_leads():
    normal = simulate(np.random.default_rng(3), 70, af=False, ischaemia=0, sentinel_p=0)
    stemi = simulate(np.random.default_rng(3), 70, af=False, ischaemia=ST_INFERIOR, sentinel_p=0)
    assert "Inferior ST elevation" in " ".join(stemi.statements) and "Normal ECG" not in stemi.statements
    assert _st_level(stemi, "aVF") > _st_level(normal, "aVF") + 0.08
    assert _st_level(stemi, "aVR") < _st_level(normal, "aVR")  # reciprocal depression


def _st_level(ecg, lead: str) -> float:
    """Median over beats of the level 60 ms after QRS end (ST segment) minus 10 ms before QRS onset (PR segment), mV."""
    qrs = ecg.measurements["qrs_end"] - ecg.measurements["qrs_onset"]
    on = ecg.qrs_onsets[(ecg.qrs_onsets > 10) & (ecg.qrs_onsets < 4700)]
    x = ecg.adc[LEADS.index(lead)].astype(float) / 200
    return float(np.median(x[on + (qrs + 60) // 2] - x[on - 5]))


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        generate(12, seed, tmp_path / name, progress=False)
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert any(f.suffix == ".dat" for f in files)
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    chart = Path("mimic-iv/icu/chartevents.csv.gz")
    assert (tmp_path / "a" / chart).read_bytes() != (tmp_path / "c" / chart).read_bytes()


def test_cli_writes_a_cohort_and_rejects_bad_arguments(tmp_path, capsys):
    assert main(["synth", "--stays", "3", "--seed", "1", "--out", str(tmp_path / "c"), "--no-progress"]) == 0
    assert "wrote 3 stays" in capsys.readouterr().out
    assert (tmp_path / "c" / "mimic-iv" / "icu" / "icustays.csv.gz").exists()
    assert main(["synth", "--stays", "0", "--out", str(tmp_path / "d")]) == 2
    assert "--stays must be at least 1" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["synth", "--stays", "2", "--out", str(tmp_path / "file")]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_time_scale_compresses_each_stay_and_the_hospital_stay_after_it(tmp_path, capsys):
    """The demo's compressed cohort: the same patients and outcomes, each course F times as long."""
    generate(40, 3, tmp_path / "full", progress=False)
    generate(40, 3, tmp_path / "short", progress=False, time_scale=0.2)

    def table(which: str, name: str) -> pl.DataFrame:
        return _read(tmp_path / which, name).sort("hadm_id")

    full, short = table("full", "icu/icustays"), table("short", "icu/icustays")
    assert full["stay_id"].to_list() == short["stay_id"].to_list()
    assert np.allclose(short["los"].to_numpy(), 0.2 * full["los"].to_numpy(), rtol=1e-3, atol=1e-3)
    adm_full, adm_short = table("full", "hosp/admissions"), table("short", "hosp/admissions")
    assert adm_full["hospital_expire_flag"].to_list() == adm_short["hospital_expire_flag"].to_list()

    def after_icu_days(adm: pl.DataFrame, stays: pl.DataFrame) -> np.ndarray:
        t = adm.join(stays, on="hadm_id").select(
            (pl.col("dischtime").str.to_datetime() - pl.col("outtime").str.to_datetime()).dt.total_seconds())
        return t.to_series().to_numpy() / 86400

    assert np.allclose(after_icu_days(adm_short, short), 0.2 * after_icu_days(adm_full, full), atol=1e-3)
    chart = _read(tmp_path / "short", "icu/chartevents").join(short.select("stay_id", "outtime"), on="stay_id")
    late = chart["charttime"].str.to_datetime() - chart["outtime"].str.to_datetime()
    assert late.max() < timedelta(minutes=15)  # charttimes round to the minute, as in MIMIC-IV
    assert len(chart) < 0.4 * len(_read(tmp_path / "full", "icu/chartevents"))  # hourly vitals over a shorter stay

    assert main(["synth", "--stays", "2", "--time-scale", "0", "--out", str(tmp_path / "bad")]) == 2
    assert "--time-scale" in capsys.readouterr().err
