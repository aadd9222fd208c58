"""MEDS reader: the real MIMIC-IV demo export and small hand-written MEDS tables."""
from __future__ import annotations

import itertools
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from replay.meds import MedsReader


def _meds(path: Path, rows: list[tuple], value_col: str = "numeric_value") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows, schema={"subject_id": pl.Int64, "time": pl.Datetime("us"), "code": pl.Utf8, value_col: pl.Float32},
                 orient="row").write_parquet(path)
    return path


T = datetime(2150, 1, 1)


def test_icu_codes_make_stays(tmp_path):
    _meds(tmp_path / "data" / "0.parquet", [
        (1, None, "GENDER//M", None),
        (1, datetime(2100, 1, 1), "MEDS_BIRTH", None),
        (1, T.replace(hour=1), "HOSPITAL_ADMISSION//URGENT//EMERGENCY ROOM", None),
        (1, T.replace(hour=2), "ICU_ADMISSION//Medical Intensive Care Unit (MICU)", None),
        (1, T.replace(hour=3), "LAB//220045//bpm", 90.0),
        (1, T.replace(hour=3), "LAB//223761//°F", 98.6),
        (1, T.replace(hour=4), "LAB//220045//bpm", 950.0),
        (1, T.replace(hour=4), "LAB//50971//mEq/L", None),
        (1, T.replace(hour=5), "LAB//51000//mg/dL", 3.0),
        (1, T.replace(hour=5), "MEDICATION//Heparin", None),
        (1, T.replace(hour=6), "ICU_DISCHARGE//Medical Intensive Care Unit (MICU)", None),
        (1, T.replace(hour=7), "LAB//220045//bpm", 70.0),
        (1, T.replace(day=3), "HOSPITAL_DISCHARGE//DIED", None),
        (1, T.replace(day=3), "MEDS_DEATH", None),
        (2, T, "LAB//220045//bpm", 60.0),
        (2, T.replace(hour=9), "LAB//220277//%", 97.0),
    ])
    reader = MedsReader(tmp_path)  # a dataset folder with data/*.parquet
    stays = {events[0].stay_id: events for events in reader.stays()}
    assert sorted(stays) == [1001, 2001]
    events = stays[1001]
    opened, body, closed, outcome = events[0], events[1:-2], events[-2], events[-1]
    assert opened.static.gender == "M" and opened.static.admission_type == "URGENT"
    assert opened.static.first_careunit.startswith("Medical") and 49 < opened.static.age < 51
    assert sorted((e.concept, round(e.value, 1)) for e in body if e.concept) == [("hr", 90.0), ("temp", 37.0)]
    generic = [e for e in body if e.item == "LAB//51000//mg/dL"]
    assert len(generic) == 1 and generic[0].concept is None
    assert not any("MEDICATION" in e.item for e in body)
    assert closed.time == T.replace(hour=6) and outcome.hospital_death is True and outcome.los_days == pytest.approx(4 / 24)
    pseudo = stays[2001]
    assert pseudo[0].time == T and pseudo[-2].time == T.replace(hour=9) and len(pseudo) == 5
    assert any("physiologically impossible" in w for w in reader.warnings)


def test_value_column_name_and_errors(tmp_path):
    f = _meds(tmp_path / "x.parquet", [(3, T, "LAB//220045//bpm", 80.0)], value_col="value")
    (events,) = list(MedsReader(f).stays())
    assert events[1].value == 80.0
    with pytest.raises(ValueError, match="does not exist"):
        MedsReader(tmp_path / "nope.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .parquet"):
        MedsReader(tmp_path / "empty")
    pl.DataFrame({"subject_id": [1], "code": ["X"]}).write_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="missing MEDS column"):
        list(MedsReader(tmp_path / "bad.parquet").stays())


def test_real_demo(shared_data):
    reader = MedsReader(shared_data / "mimic-iv-demo-meds" / "mimic_iv_demo_meds_events.parquet")
    assert len(reader.stay_ids()) == 140
    hr_stays = hr_rows = 0
    for events in itertools.islice(reader.stays(), 30):  # all 140: `medm2t data inspect --meds` (slower)
        hr = [e for e in events if e.kind == "measurement" and e.concept == "hr"]
        hr_rows += len(hr)
        hr_stays += bool(hr)
    assert hr_stays == 30 and hr_rows > 1_000


def test_the_discharge_location_decides_a_death_in_hospital(tmp_path):
    """DIED is a death in hospital even when MEDS_DEATH is missing; a hospice discharge is alive even when
    MEDS_DEATH falls on the discharge day; UNK falls back to MEDS_DEATH; the ICU out-time may run past the
    hospital discharge of a death (the admission's discharge still decides)."""
    rows = []
    for subject, where, death_day, icu_out in ((1, "DIED", None, T.replace(day=3, hour=2)), (2, "HOSPICE", 3, None),
                                               (3, "UNK", 3, None), (4, "HOME", None, None)):
        rows += [(subject, T.replace(hour=2), "ICU_ADMISSION//MICU", None),
                 (subject, T.replace(hour=3), "LAB//220045//bpm", 90.0),
                 (subject, icu_out or T.replace(hour=6), "ICU_DISCHARGE//MICU", None),
                 (subject, T.replace(day=3), f"HOSPITAL_DISCHARGE//{where}", None)]
        if death_day:
            rows.append((subject, T.replace(day=death_day, hour=20), "MEDS_DEATH", None))
    _meds(tmp_path / "t.parquet", rows)
    outcomes = {e[-1].subject_id: e[-1] for e in MedsReader(tmp_path / "t.parquet").stays()}
    assert {s: o.hospital_death for s, o in outcomes.items()} == {1: True, 2: False, 3: True, 4: False}
    assert outcomes[1].deathtime == T.replace(day=3)


def test_the_demo_read_as_meds_and_as_mimic_files_has_the_same_deaths(shared_data):
    """One outcome whatever the source: the same 140 stays (matched by subject and ICU admission minute) have
    the same in-hospital deaths in both forms of the MIMIC-IV demo."""
    from replay.sources import parse_spec

    def deaths(spec: str) -> dict:
        out = {}
        for stay in parse_spec(spec).stays():
            o = next(e for e in stay if e.kind == "outcome")
            out[o.subject_id, o.icu_intime.replace(second=0, microsecond=0)] = o.hospital_death
        return out

    mimic = deaths(f"mimic:{shared_data / 'mimic-iv-demo-2.2'}")
    meds = deaths(f"meds:{shared_data / 'mimic-iv-demo-meds'}")
    assert len(mimic) == 140 and set(mimic) == set(meds)
    assert sum(v is True for v in mimic.values()) == 20
    assert {k: (v, meds[k]) for k, v in mimic.items() if v != meds[k]} == {}
