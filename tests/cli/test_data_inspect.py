"""`medm2t data inspect` and source selection (flags and specs), through the real CLI."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from medm2t.cli import main
from replay.sources import SourceError, parse_spec

RECORD = "Time,Parameter,Value\n00:00,RecordID,{rid}\n00:00,Age,60\n00:05,HR,{hr}\n00:10,RespRate,18\n"


@pytest.fixture
def set_x(tmp_path) -> Path:
    d = tmp_path / "set-x"
    d.mkdir()
    for rid, hr in ((1, 80), (2, 500), (3, 95)):
        (d / f"{rid}.txt").write_text(RECORD.format(rid=rid, hr=hr))
    (tmp_path / "Outcomes-x.txt").write_text(
        "RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n1,1,1,3,-1,0\n2,1,1,2,1,1\n3,1,1,4,-1,0\n")
    return d


def test_inspect_json(set_x, capsys):
    assert main(["data", "inspect", "--physionet2012", str(set_x), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stays"] == 3 and out["subjects"] == 3 and out["deaths"] == 1 and out["ecgs"] == 0
    assert out["events"] == {"measurement": 5, "outcome": 3, "stay_closed": 3, "stay_opened": 3}
    assert len(out["warnings"]) == 1 and "2.txt line 4" in out["warnings"][0]


def test_inspect_table(set_x, capsys):
    assert main(["data", "inspect", "--physionet2012", str(set_x)]) == 0
    out = capsys.readouterr().out
    assert "stays" in out and "measurement" in out and "physiologically impossible" in out


@pytest.mark.parametrize("argv, message", [
    ([], "no data source"),
    (["--physionet2012", "a", "--meds", "b"], "conflicting"),
    (["--meds", "b", "--ecg", "c"], "--ecg only goes with --mimic"),
    (["--mimic", "/nonexistent/mimic"], "does not exist"),
])
def test_inspect_errors_are_one_line(argv, message, capsys):
    assert main(["data", "inspect", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_parse_spec(set_x, tmp_path):
    reader = parse_spec(f"physionet2012:{set_x}:{tmp_path / 'Outcomes-x.txt'}")
    assert reader.name == "physionet2012" and reader.outcomes_path == tmp_path / "Outcomes-x.txt"
    synth = tmp_path / "synth"
    for sub in ("mimic-iv/hosp", "mimic-iv/icu"):
        (synth / sub).mkdir(parents=True)
    (synth / "mimic-iv/icu/icustays.csv").write_text("subject_id,hadm_id,stay_id,first_careunit,intime,outtime,los\n")
    reader = parse_spec(f"synth:{synth}")
    assert reader.name == "mimic-iv" and reader.root == synth / "mimic-iv" and reader.ecg_dir is None
    assert parse_spec(f"mimic:{synth / 'mimic-iv'}").root == synth / "mimic-iv"
    for bad in ("nonsense", "foo:bar", f"mimic:{synth}/mimic-iv,colour=red"):
        with pytest.raises(SourceError):
            parse_spec(bad)


def test_inspect_real_mimic_demo(shared_data, capsys):
    assert main(["data", "inspect", "--mimic", str(shared_data / "mimic-iv-demo-2.2"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stays"] == 140 and out["subjects"] == 100
    assert any("chartevents" in w and "missing" in w for w in out["warnings"])
