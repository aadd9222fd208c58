"""PhysioNet 2012 reader: real set-a (first records), hand-written records with bad lines, tar and folder."""
from __future__ import annotations

import itertools
import tarfile
from pathlib import Path

import pytest

from medm2t.events import Measurement
from replay.physionet2012 import EPOCH, PhysioNet2012Reader

RECORD = """Time,Parameter,Value
00:00,RecordID,{rid}
00:00,Age,54
00:00,Gender,0
00:00,Height,-1
00:00,ICUType,4
00:00,Weight,70.5
00:07,HR,73
00:07,NISysABP,147
00:07,FiO2,0.5
00:07,Temp,-17.8
00:07,,5
00:30,HR,abc
01:10,GCS,15
01:10,SaO2,97
02:00,Weight,71
"""
OUTCOMES = "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n{rid},6,1,5,-1,0\n{rid2},10,2,-1,3,1\n"


@pytest.fixture
def folder(tmp_path) -> Path:
    d = tmp_path / "set-z"
    d.mkdir()
    (d / "100001.txt").write_text(RECORD.format(rid=100001))
    (d / "100002.txt").write_text(RECORD.format(rid=100002).replace("00:00,Gender,0", "00:00,Gender,1"))
    (tmp_path / "Outcomes-z.txt").write_text(OUTCOMES.format(rid=100001, rid2=100002))
    return d


def test_folder_records(folder):
    reader = PhysioNet2012Reader(folder)
    stays = {events[0].stay_id: events for events in reader.stays()}
    assert sorted(stays) == [100001, 100002]
    events = stays[100001]
    opened, body, outcome = events[0], events[1:-2], events[-1]
    assert opened.time == EPOCH and opened.static.age == 54 and opened.static.gender == "F"
    assert opened.static.height_cm is None and opened.static.weight_kg == 70.5
    assert opened.static.first_careunit == "Surgical ICU"
    concepts = {e.concept: e.value for e in body if e.concept}
    assert concepts == {"hr": 73, "sbp": 147, "fio2": 50.0, "gcs": 15}
    assert [e.value for e in body if e.item == "Weight"] == [70.5, 71]
    assert next(e for e in body if e.item == "SaO2").concept is None
    assert events[-2].kind == "stay_closed" and events[-2].time == EPOCH.replace(hour=2)
    assert outcome.hospital_death is False and outcome.los_days == 5 and outcome.deathtime is None
    assert stays[100002][-1].hospital_death is True and stays[100002][-1].los_days is None
    text = "\n".join(reader.warnings)
    assert "physiologically impossible" in text and "Temp=-17.8" in text
    assert "not Time,Parameter,Value" in text and "unparsable time or value" in text


def test_trusted_measurements_equal_validated_ones(folder):
    events = next(PhysioNet2012Reader(folder).stays())
    for m in events[1:-2]:
        assert Measurement.model_validate(m.model_dump()) == m


def test_tar_archive_and_outcomes_override(tmp_path, folder):
    archive = tmp_path / "set-y.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in sorted(folder.iterdir()):
            tar.add(f, arcname=f"set-y/{f.name}")
    reader = PhysioNet2012Reader(archive)
    assert any("no Outcomes" in w for w in reader.warnings)
    assert all(events[-1].kind == "stay_closed" for events in reader.stays())
    reader = PhysioNet2012Reader(archive, outcomes=tmp_path / "Outcomes-z.txt")
    assert sorted(reader.stay_ids()) == [100001, 100002]
    assert [events[-1].kind for events in reader.stays()] == ["outcome", "outcome"]


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        PhysioNet2012Reader(tmp_path / "missing.tar.gz")
    broken = tmp_path / "set-q.tar.gz"
    broken.write_bytes(b"not a tar")
    with pytest.raises(ValueError, match="not a readable tar"):
        list(PhysioNet2012Reader(broken).stays())


def test_real_set_a(shared_data):
    archive = shared_data / "challenge-2012" / "set-a.tar.gz"
    reader = PhysioNet2012Reader(archive)
    assert reader.outcomes_path.name == "Outcomes-a.txt"
    assert len(reader.stay_ids()) == 4000
    outcomes = {}
    for line in reader.outcomes_path.read_text().splitlines()[1:]:
        parts = line.split(",")
        outcomes[int(parts[0])] = parts[-1] == "1"
    assert sum(outcomes.values()) == 554
    with_hr = 0
    for events in itertools.islice(reader.stays(), 200):
        assert events[0].kind == "stay_opened" and events[-1].kind == "outcome"
        assert events[-1].hospital_death == outcomes[events[0].stay_id]
        with_hr += any(e.kind == "measurement" and e.concept == "hr" for e in events)
    assert with_hr >= 190  # a few real records have almost no observations


def test_the_source_says_its_vitals_are_too_sparse_for_the_dense_grid():
    """Training leaves out the dense-vitals encoder by asking the reader class, not by matching the spec."""
    from replay.sources import SourceError, source_class

    assert source_class("physionet2012:set-a.tar.gz").dense_vitals is False
    assert source_class("synth:cohort").dense_vitals is True
    assert source_class("meds:x.parquet").dense_vitals is True
    with pytest.raises(SourceError, match="unknown source kind"):
        source_class("csv:x")
