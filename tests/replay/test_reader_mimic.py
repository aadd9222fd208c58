"""MIMIC-IV reader on the real demo and on small hand-written tables with bad rows."""
from __future__ import annotations

import gzip
from collections import Counter
from pathlib import Path

import pytest

from replay.cvd_codes import cvd_type_of_diagnosis, is_cvd_procedure
from replay.mimic import MimicLayoutError, MimicReader


def _write(path: Path, text: str, gz: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.strip().encode() + b"\n"
    if gz:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as fh:
            fh.write(data)
    else:
        path.write_bytes(data)


@pytest.fixture
def mini(tmp_path) -> Path:
    root = tmp_path / "mimic"
    _write(root / "icu" / "icustays.csv", """
subject_id,hadm_id,stay_id,first_careunit,last_careunit,intime,outtime,los
1,100,1000,MICU,MICU,2150-01-01 10:00:00,2150-01-03 10:00:00,2.0
2,200,2000,CCU,CCU,2160-05-01 00:00:00,2160-05-02 12:00:00,1.5
""", gz=True)
    _write(root / "hosp" / "patients.csv", """
subject_id,gender,anchor_age,anchor_year,anchor_year_group,dod
1,F,60,2148,2011 - 2013,
2,M,70,2160,2011 - 2013,2160-05-02
""")
    _write(root / "hosp" / "admissions.csv", """
subject_id,hadm_id,admittime,dischtime,deathtime,admission_type,admission_location,hospital_expire_flag
1,100,2150-01-01 08:00:00,2150-01-10 08:00:00,,URGENT,EMERGENCY ROOM,0
1,101,2150-02-01 08:00:00,2150-02-05 08:00:00,,ELECTIVE,PHYSICIAN REFERRAL,0
2,200,2160-04-30 20:00:00,2160-05-02 12:00:00,2160-05-02 12:00:00,EW EMER.,EMERGENCY ROOM,1
""")
    _write(root / "icu" / "chartevents.csv", """
subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valuenum,valueuom,warning
1,100,1000,7,2150-01-01 11:00:00,2150-01-01 11:05:00,220045,88,88,bpm,0
1,100,1000,7,2150-01-01 11:00:00,2150-01-01 11:05:00,223761,98.6,98.6,°F,0
1,100,1000,7,2150-01-01 12:00:00,2150-01-01 12:01:00,220045,999,999,bpm,0
1,100,1000,7,2150-01-01 12:00:00,2150-01-01 12:01:00,220045,88,88
1,100,1000,7,2150-01-01 13:00:00,,220050,120,120,mmHg,0
1,100,1000,7,2150-01-01 13:00:00,2150-01-01 13:02:00,999001,5,5,x,0
1,100,1000,7,2150-01-01 14:00:00,2150-01-01 14:02:00,220224,999998,999998,mmHg,0
2,200,2000,7,2160-05-01 01:00:00,2160-05-01 01:03:00,220045,110,110,bpm,0
9,900,9000,7,2160-05-01 01:00:00,2160-05-01 01:03:00,220045,110,110,bpm,0
""")
    _write(root / "hosp" / "labevents.csv", """
labevent_id,subject_id,hadm_id,specimen_id,itemid,order_provider_id,charttime,storetime,value,valuenum,valueuom,ref_range_lower,ref_range_upper,flag,priority,comments
1,1,100,1,50971,,2150-01-01 12:00:00,2150-01-01 13:00:00,4.1,4.1,mEq/L,,,,STAT,
2,1,100,1,50971,,2150-01-01 12:00:00,2150-01-01 13:00:00,5.0,5.0,mEq/L,,,,STAT,Hemolysis falsely elevates this test.
3,1,100,1,51003,,2150-01-01 12:00:00,2150-01-01 13:00:00,,,ng/mL,,,,STAT,<0.01.  CTROPNT > 0.10 NG/ML SUGGESTS ACUTE MI.
4,1,100,1,50983,,2150-01-01 12:00:00,2150-01-01 13:00:00,lots,,mEq/L,,,,STAT,
5,1,100,1,50806,,2150-01-01 12:00:00,2150-01-01 13:00:00,101,101,mEq/L,,,,STAT,
6,1,100,1,50971,,2150-01-05 12:00:00,2150-01-05 13:00:00,4.4,4.4,mEq/L,,,,STAT,
7,1,,1,51487,,2150-01-02 12:00:00,2150-01-02 13:00:00,NEG,,,,,,STAT,
""")
    _write(root / "hosp" / "diagnoses_icd.csv", """
subject_id,hadm_id,seq_num,icd_code,icd_version
1,100,1,5849,9
1,101,1,I214,10
2,200,2,I500,10
""")
    _write(root / "hosp" / "procedures_icd.csv", """
subject_id,hadm_id,seq_num,chartdate,icd_code,icd_version
2,200,1,2160-05-01,3615,9
""")
    return root


def _read(root: Path):
    reader = MimicReader(root)
    return reader, {events[0].stay_id: events for events in reader.stays()}


def test_mini_layout_events(mini):
    reader, stays = _read(mini)
    assert sorted(stays) == [1000, 2000]
    events = stays[1000]
    assert [e.kind for e in events[:1] + events[-2:]] == ["stay_opened", "stay_closed", "outcome"]
    body = events[1:-2]
    assert body == sorted(body, key=lambda e: (e.available_time, e.time, e.event_id))
    by_item = Counter(e.item for e in body)
    # HR 88 twice (one row lacks trailing fields → malformed, skipped), 999 dropped as impossible
    assert by_item["220045"] == 1
    temp = next(e for e in body if e.concept == "temp")
    assert temp.value == pytest.approx(37.0) and temp.source_item == "223761" and temp.item == "223762"
    sbp = next(e for e in body if e.concept == "sbp")
    assert sbp.available_time == sbp.time  # no storetime → charttime
    k = [e for e in body if e.item == "50971"]
    assert [e.value for e in k] == [4.1]  # haemolysed row dropped, day-5 row outside the stay
    assert next(e for e in body if e.item == "51003").value == pytest.approx(0.009)
    assert next(e for e in body if e.item == "50902").source_item == "50806"
    assert next(e for e in body if e.item == "51487").text == "NEG"
    assert not any(e.item == "220224" for e in body)  # PaO2 999998
    opened = events[0]
    assert opened.static.gender == "F" and opened.static.age == 62 and opened.static.admission_type == "URGENT"
    assert events[-1].cvd_90d == "chd" and events[-1].hospital_death is False
    assert stays[2000][-1].hospital_death is True and stays[2000][-1].cvd_90d == "chd"  # PCI procedure; HF only secondary
    text = "\n".join(reader.warnings)
    for expected in ("malformed CSV row", "physiologically impossible", "excluded comment", "unparsable value",
                     "itemid 220045, value 999", "chartevents.csv"):
        assert expected in text, expected


def test_event_ids_are_stable(mini):
    _, first = _read(mini)
    _, second = _read(mini)
    assert [e.event_id for e in first[1000]] == [e.event_id for e in second[1000]]


def test_missing_tables_warn_and_continue(mini):
    (mini / "icu" / "chartevents.csv").unlink()
    (mini / "hosp" / "diagnoses_icd.csv").unlink()
    reader, stays = _read(mini)
    assert len(stays) == 2
    assert any("chartevents" in w and "missing" in w for w in reader.warnings)
    assert stays[1000][-1].cvd_90d is None


def test_missing_folder_or_cohort_is_a_clear_error(tmp_path, mini):
    with pytest.raises(MimicLayoutError, match="does not exist"):
        MimicReader(tmp_path / "nowhere")
    (mini / "icu" / "icustays.csv.gz").unlink()
    with pytest.raises(MimicLayoutError, match="icustays"):
        MimicReader(mini)
    (tmp_path / "only-hosp" / "hosp").mkdir(parents=True)
    with pytest.raises(MimicLayoutError, match="icu"):
        MimicReader(tmp_path / "only-hosp")


def test_icd_sets():
    assert cvd_type_of_diagnosis("41071", 9) == "chd" and cvd_type_of_diagnosis("I639", 10) == "stroke"
    assert cvd_type_of_diagnosis("42823", 9) == "hf" and cvd_type_of_diagnosis("I10", 10) is None
    assert is_cvd_procedure("02703ZZ", 10) and not is_cvd_procedure("0BH17EZ", 10)


def test_real_demo(shared_data):
    reader = MimicReader(shared_data / "mimic-iv-demo-2.2")
    assert len(reader.stay_ids()) == 140
    kinds, deaths = Counter(), 0
    for events in reader.stays():
        kinds.update(e.kind for e in events)
        deaths += bool(events[-1].hospital_death)
        assert events[0].kind == "stay_opened" and events[-1].kind == "outcome"
    assert kinds["stay_opened"] == 140 and kinds["measurement"] > 10_000 and 0 < deaths < 140
    assert any("chartevents" in w and "missing" in w for w in reader.warnings)


def test_synthetic_cohort_with_ecgs(tmp_path, capsys):
    """The project's own synthetic cohort (MIMIC-IV + MIMIC-IV-ECG layout) through the reader, ECGs included."""
    from medm2t.cli import main
    from replay.sources import parse_spec

    assert main(["synth", "--stays", "12", "--seed", "3", "--out", str(tmp_path), "--no-progress"]) == 0
    capsys.readouterr()
    reader = parse_spec(f"synth:{tmp_path}")
    kinds = Counter()
    for events in reader.stays():
        kinds.update(e.kind for e in events)
        ecgs = [e for e in events if e.kind == "ecg"]
        for e in ecgs:
            assert events[0].time <= e.time <= events[-2].time
    assert kinds["stay_opened"] == 12 and kinds["measurement"] > 1000 and kinds["ecg"] > 0
    assert reader.warnings == []
