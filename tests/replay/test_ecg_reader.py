"""replay/ecg.py: WFDB records of every 12-lead flavour → (12, n) mV at 500 Hz, and the MIMIC-IV-ECG archive
→ Ecg events, with broken files warned about and skipped."""
from __future__ import annotations

import csv
import shutil
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import wfdb

from medm2t.events import ECG_MEASUREMENTS, LEADS, make_event_id
from replay.ecg import EcgArchive, EcgReadError, clean_measurement, clean_statement, read_ecg_record
from replay.synth.dictionaries import ECG_MEASUREMENT_COLUMNS, ECG_RECORD_LIST_COLUMNS
from replay.synth.ecg_sim import simulate
from replay.synth.writer import ecg_relpath, write_wfdb
from tests.helpers.paths import SHARED_DATA

ECG_DIR = SHARED_DATA / "ecg-12lead"


@pytest.fixture(scope="module")
def ecg_dir() -> Path:
    if not ECG_DIR.exists():
        pytest.skip(f"{ECG_DIR} is absent (the shared real-ECG folder sits beside the repo on dev machines and CI)")
    return ECG_DIR


def test_all_shared_records_load_as_12_named_leads_at_500hz(ecg_dir):
    headers = sorted(ecg_dir.rglob("*.hea"))
    assert len(headers) == 223
    for hea in headers:
        rec = read_ecg_record(hea.with_suffix(""))
        raw = wfdb.rdheader(str(hea.with_suffix("")))
        assert rec.leads == LEADS and rec.fs == 500.0, hea
        assert rec.signal.shape == (12, round(raw.sig_len * 500 / raw.fs)), hea
        assert rec.signal.dtype == np.float32
        assert not rec.warnings, (hea, rec.warnings)
        assert np.isfinite(rec.signal).all(), hea
        assert 0.02 < np.percentile(np.abs(rec.signal), 99) < 10, hea  # millivolts, not µV or adc units


def test_fast_format16_path_matches_wfdb_on_every_shared_record(ecg_dir):
    from replay.ecg import _read_format16, _read_with_wfdb

    fallback = []
    for hea in sorted(ecg_dir.rglob("*.hea")):
        base = hea.with_suffix("")
        fast = _read_format16(base, str(hea))
        if fast is None:  # PTB's s0010_re spreads its signals over two files (.dat + .xyz): wfdb reads it
            fallback.append(hea.name)
            continue
        ref = _read_with_wfdb(base, str(hea))
        np.testing.assert_allclose(fast[0], ref[0], atol=1e-9, err_msg=str(hea))
        assert fast[1:3] == ref[1:3], hea
        assert [u.lower() for u in fast[3]] == [u.lower() for u in ref[3]], hea
    assert fallback == ["s0010_re.hea"]


def test_lead_names_are_normalised_and_extra_channels_dropped(ecg_dir):
    # PTB-XL writes AVR/AVL/AVF; PTB Diagnostic writes lower case plus Frank leads vx, vy, vz at 1000 Hz.
    base = ecg_dir / "ptb-xl" / "records500" / "06000" / "06000_hr"
    raw = wfdb.rdrecord(str(base))
    rec = read_ecg_record(base)
    np.testing.assert_allclose(rec.signal[LEADS.index("aVR")], raw.p_signal[:, raw.sig_name.index("AVR")], atol=1e-6)

    ptb = ecg_dir / "ptb-diagnostic" / "s0010_re"
    raw = wfdb.rdrecord(str(ptb))
    rec = read_ecg_record(ptb)
    assert len(raw.sig_name) == 15 and rec.signal.shape == (12, raw.sig_len // 2)
    # Downsampled 1000 → 500 Hz: every other sample agrees closely (anti-alias filter aside).
    v2 = raw.p_signal[::2, raw.sig_name.index("v2")]
    assert np.corrcoef(rec.signal[LEADS.index("V2")], v2)[0, 1] > 0.98


def test_100hz_record_is_upsampled_with_same_shape_of_signal(ecg_dir):
    base = ecg_dir / "ptb-xl" / "records100" / "00000" / "00001_lr"
    raw = wfdb.rdrecord(str(base))
    rec = read_ecg_record(base)
    assert rec.signal.shape == (12, 5000)
    np.testing.assert_allclose(rec.signal[1, ::5], raw.p_signal[:, 1], atol=0.05)


def _write(tmp: Path, name: str, signal_mv: np.ndarray, leads: list[str], units: str = "mV", fs: int = 500) -> Path:
    scale = 1000.0 if units == "uV" else 1.0
    wfdb.wrsamp(name, fs=fs, units=[units] * len(leads), sig_name=leads, p_signal=signal_mv.T * scale,
                fmt=["16"] * len(leads), adc_gain=[200.0 / scale] * len(leads), baseline=[0] * len(leads),
                write_dir=str(tmp))
    return tmp / name


def _sine(n_leads: int, n: int = 5000) -> np.ndarray:
    t = np.arange(n) / 500
    return np.stack([np.sin(2 * np.pi * (1 + k) * t) * (0.2 + 0.1 * k) for k in range(n_leads)])


def test_microvolt_units_become_millivolts(tmp_path):
    sig = _sine(12)
    rec = read_ecg_record(_write(tmp_path, "uv", sig, list(LEADS), units="uV"))
    np.testing.assert_allclose(rec.signal, sig, atol=0.01)


def test_missing_leads_are_nan_rows_with_a_warning(tmp_path):
    present = ["I", "II", "V1", "V2", "V3", "V4", "V5", "V6"]
    rec = read_ecg_record(_write(tmp_path, "eight", _sine(8), present))
    for lead in ("III", "aVR", "aVL", "aVF"):
        assert np.isnan(rec.signal[LEADS.index(lead)]).all()
    assert np.isfinite(rec.signal[LEADS.index("V6")]).all()
    assert len(rec.warnings) == 1 and "missing leads III, aVR, aVL, aVF" in rec.warnings[0]
    assert "eight.hea" in rec.warnings[0]


def test_nan_samples_are_warned(tmp_path):
    sig = _sine(12)
    sig[3, 100:110] = np.nan  # wfdb writes NaN as the format's missing-value code
    rec = read_ecg_record(_write(tmp_path, "gap", sig, list(LEADS)))
    assert np.isnan(rec.signal[3, 100:110]).all() and np.isfinite(rec.signal[3, 200:]).all()
    assert any("10 NaN samples" in w for w in rec.warnings)


def test_nan_samples_survive_resampling_as_nan_only_locally(tmp_path):
    sig = _sine(12, n=1000)
    sig[0, 500:505] = np.nan
    rec = read_ecg_record(_write(tmp_path, "gap100", sig, list(LEADS), fs=100))
    assert rec.signal.shape == (12, 5000)
    nan_rows = np.isnan(rec.signal[0])
    assert 20 <= nan_rows.sum() <= 30 and np.isfinite(rec.signal[1:]).all()


def test_truncated_or_missing_or_garbled_files_raise_a_named_error(tmp_path):
    base = _write(tmp_path, "rec", _sine(12), list(LEADS))
    data = (tmp_path / "rec.dat").read_bytes()
    (tmp_path / "rec.dat").write_bytes(data[: len(data) // 3])
    with pytest.raises(EcgReadError, match="rec.hea"):
        read_ecg_record(base)
    (tmp_path / "rec.dat").unlink()
    with pytest.raises(EcgReadError, match="rec.hea"):
        read_ecg_record(base)
    (tmp_path / "bad.hea").write_text("this is not a WFDB header\n")
    with pytest.raises(EcgReadError, match="bad.hea"):
        read_ecg_record(tmp_path / "bad")
    # Mislabelled: no standard lead name at all.
    with pytest.raises(EcgReadError, match="none of the 12 standard leads"):
        read_ecg_record(_write(tmp_path, "odd", _sine(3), ["vx", "vy", "vz"]))


def test_measurement_and_statement_cleaning():
    for sentinel in ("29999", "32767", "65535", "29999.0", "", None, "nan", "n/a"):
        assert clean_measurement(sentinel) is None
    assert clean_measurement("812") == 812.0 and clean_measurement("-45") == -45.0
    assert clean_statement("  Sinus   rhythm. ") == "Sinus rhythm"
    assert clean_statement("--- Warning: data quality may affect interpretation ---") == \
        "Warning: data quality may affect interpretation"
    assert clean_statement("   ") is None


# ---- the archive -------------------------------------------------------------------------------------


def _archive(root: Path) -> list[dict]:
    """Four ECGs of subject 10000032 in MIMIC-IV-ECG layout, with one measurement row per study."""
    rng = np.random.default_rng(5)
    t0 = datetime(2180, 7, 23, 8, 0)
    studies = []
    for k, hours in enumerate((-5, 2, 10, 30)):
        study_id = 40689238 + k
        when = t0 + timedelta(hours=hours)
        sim = simulate(rng, 70 + 10 * k, k == 2, 0)
        rel = ecg_relpath(10000032, study_id)
        write_wfdb(root / rel, sim.adc, LEADS, when)
        studies.append({"study_id": study_id, "time": when, "path": rel, "sim": sim})
    with open(root / "record_list.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(ECG_RECORD_LIST_COLUMNS)
        for s in studies:
            w.writerow([10000032, s["study_id"], s["study_id"], f"{s['time']:%Y-%m-%d %H:%M:%S}", s["path"]])
        w.writerow([10000032, "not-a-number", "x", "2180-07-23 09:00:00", "files/x"])
    with open(root / "machine_measurements.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(ECG_MEASUREMENT_COLUMNS)
        for k, s in enumerate(studies):
            reports = ["Sinus rhythm ", "", "  Abnormal   ECG."] + [""] * 15
            m = dict(s["sim"].measurements)
            m["p_onset"], m["t_axis"] = (29999, 32767) if k == 1 else (m["p_onset"], m["t_axis"])
            if k == 1:
                m["qrs_end"] = 65535
                m["p_end"] = ""
            w.writerow([10000032, s["study_id"], 6848296, f"{s['time']:%Y-%m-%d %H:%M:%S}", *reports,
                        "0.005-150 Hz", "60 Hz notch  Baseline filter", *(m[c] for c in ECG_MEASUREMENTS)])
    return studies


def test_archive_events_for_stay_window_measurements_and_ids(tmp_path):
    studies = _archive(tmp_path)
    warnings: list[str] = []
    archive = EcgArchive(tmp_path, warnings.append)
    start, end = studies[0]["time"] + timedelta(hours=5), studies[2]["time"]  # ICU stay 08:00 .. 18:00
    events = archive.events_for_stay(31269608, 10000032, start, end)
    assert [e.study_id for e in events] == [studies[1]["study_id"], studies[2]["study_id"]]  # end is inclusive
    assert len(warnings) == 1 and "record_list.csv:6" in warnings[0]  # the bad row, by line number

    first = events[0]
    assert first.event_id == make_event_id("mimic-iv-ecg", studies[1]["study_id"])
    assert first.stay_id == 31269608 and first.subject_id == 10000032
    assert first.time == first.available_time == studies[1]["time"]
    assert first.statements == ("Sinus rhythm", "Abnormal ECG")
    assert set(first.measurements) == set(ECG_MEASUREMENTS)
    for name in ("p_onset", "p_end", "qrs_end", "t_axis"):
        assert first.measurements[name] is None, name
    assert first.measurements["rr_interval"] == studies[1]["sim"].measurements["rr_interval"]
    signal = first.waveform.to_array()
    assert signal.shape == (12, 5000) and first.waveform.fs == 500.0
    np.testing.assert_allclose(signal, studies[1]["sim"].adc / 200.0, atol=0.003)
    assert archive.events_for_stay(1, 99999999, start, end) == []


def test_archive_skips_broken_files_with_a_warning_and_keeps_going(tmp_path):
    studies = _archive(tmp_path)
    dat = tmp_path / (studies[1]["path"] + ".dat")
    dat.write_bytes(dat.read_bytes()[:1000])                          # truncated
    (tmp_path / (studies[2]["path"] + ".dat")).unlink()               # missing
    hea = tmp_path / (studies[3]["path"] + ".hea")
    hea.write_text(hea.read_text().replace(" V1\n", " V1x\n"))         # mislabelled lead
    warnings: list[str] = []
    events = EcgArchive(tmp_path, warnings.append).events_for_stay(1, 10000032, datetime(2100, 1, 1), datetime(2200, 1, 1))
    assert [e.study_id for e in events] == [studies[0]["study_id"], studies[3]["study_id"]]
    assert any(str(studies[1]["study_id"]) in w and "skipped" in w for w in warnings)
    assert any(str(studies[2]["study_id"]) in w and "skipped" in w for w in warnings)
    assert any("missing leads V1" in w for w in warnings)
    assert events[1].quality and "missing leads V1" in events[1].quality[0]


def test_archive_without_measurements_file_warns_and_still_yields_signals(tmp_path):
    studies = _archive(tmp_path)
    (tmp_path / "machine_measurements.csv").unlink()
    warnings: list[str] = []
    events = EcgArchive(tmp_path, warnings.append).events_for_stay(1, 10000032, studies[0]["time"], studies[3]["time"])
    assert len(events) == 4 and all(v is None for v in events[0].measurements.values())
    assert any("machine_measurements.csv" in w for w in warnings)


def test_archive_without_record_list_is_a_clear_error(tmp_path):
    archive = EcgArchive(tmp_path, lambda _: None)
    with pytest.raises(FileNotFoundError, match="record_list.csv"):
        archive.events_for_stay(1, 1, datetime(2100, 1, 1), datetime(2200, 1, 1))


def test_copy_of_real_cinc_record_in_archive_layout_reads(tmp_path, ecg_dir):
    # A CinC .mat record (24-byte offset) placed where MIMIC-IV-ECG keeps its files still loads.
    dest = tmp_path / "files" / "p1000" / "p10000032" / "s1"
    dest.mkdir(parents=True)
    for ext in (".hea", ".mat"):
        shutil.copy(ecg_dir / "georgia-12lead" / f"E07508{ext}", dest / f"E07508{ext}")
    rec = read_ecg_record(dest / "E07508")
    assert rec.signal.shape == (12, 5000) and not rec.warnings
