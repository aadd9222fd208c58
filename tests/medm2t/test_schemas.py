"""The exported JSON Schemas are closed, equal the published ones in docs/schemas/, and the FHIR
RiskAssessment the worker builds validates both with fhir.resources and with its exported schema."""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from fhir.resources.R4B.riskassessment import RiskAssessment

from medm2t import topics
from medm2t.events import RiskScore, TaskScore
from hypothesis import given, settings as hsettings, strategies as st

from medm2t.fhir import risk_assessment, risk_assessment_json
from medm2t.schemas import MESSAGE_TYPES, export_schemas, schema_of
from medm2t.settings import DEMO_CHECKPOINT
from stream.scorers.news2 import News2Scorer
from stream.scoring import StayView
from tests.helpers.paths import ROOT

PUBLISHED = ROOT / "docs" / "schemas"
T0 = datetime(2150, 1, 1, 8, 0)


def _objects(schema: dict):
    yield "root", schema
    yield from schema.get("$defs", {}).items()


@pytest.mark.parametrize("kind", sorted(MESSAGE_TYPES))
def test_every_object_in_every_schema_is_closed(kind):
    open_ = [name for name, d in _objects(schema_of(MESSAGE_TYPES[kind]))
             if d.get("type") == "object" and d.get("additionalProperties") is not False]
    assert not open_, f"{kind}: objects without additionalProperties false: {open_}"


def test_export_equals_the_published_schemas(tmp_path):
    """A schema change is a contract change: follow docs/schemas.md, then `medm2t schema export docs/schemas`."""
    written = {p.name: p.read_text() for p in export_schemas(tmp_path)}
    published = {p.name: p.read_text() for p in PUBLISHED.glob("*.schema.json")}
    assert sorted(written) == sorted(published)
    changed = [name for name in written if written[name] != published[name]]
    assert not changed, f"schemas differ from docs/schemas/: {changed} (see docs/schemas.md)"


def test_docker_compose_creates_every_topic():
    compose = (ROOT / "docker-compose.yml").read_text()
    line = next(ln for ln in compose.splitlines() if ln.strip().startswith("for t in "))
    assert set(line.split(" in ", 1)[1].split(";")[0].split()) == set(topics.ALL_TOPICS)


def _medm2t_score() -> RiskScore:
    return RiskScore(
        score_id="0123456789abcdef01234567", stay_id=30001, subject_id=10001, scorer="medm2t",
        model_version="medm2t-arch-3/test", scored_at=T0 + timedelta(hours=26), hours_since_admission=26.0,
        inputs_seen=40, missing=("ECG",),
        tasks={"mortality": TaskScore(value=0.23, kind="probability", calibration="calibrated (temperature)"),
               "los_remaining": TaskScore(value=2.4, kind="days", calibration="uncalibrated"),
               "cvd_90d": TaskScore(value=0.3, kind="class_probabilities", calibration="uncalibrated",
                                    probabilities={"none": 0.7, "chd": 0.1, "stroke": 0.05, "hf": 0.15})})


def _fhir_schema() -> dict:
    return json.loads((PUBLISHED / "fhir_risk_assessment.v1.schema.json").read_text())


def test_a_risk_assessment_validates_with_fhir_resources_and_its_schema():
    raw = risk_assessment(_medm2t_score()).model_dump_json()
    doc = json.loads(raw)
    jsonschema.validate(doc, _fhir_schema(), format_checker=jsonschema.FormatChecker())
    back = RiskAssessment.model_validate_json(raw)
    assert back.id == "0123456789abcdef01234567"
    assert back.subject.reference == "Patient/10001" and back.encounter.reference == "Encounter/30001"
    assert back.method.coding[0].code == "medm2t-arch-3/test"
    by_code = {p.outcome.coding[0].code: p for p in back.prediction}
    assert float(by_code["death_in_hospital"].probabilityDecimal) == 0.23
    assert "calibrated (temperature)" in by_code["death_in_hospital"].rationale
    assert {"cvd_90d_chd", "cvd_90d_stroke", "cvd_90d_hf"} <= set(by_code)
    hf = by_code["cvd_90d_hf"].whenPeriod
    assert hf.end - hf.start == timedelta(days=90) and hf.start.replace(tzinfo=None) == T0
    assert any("ICU days remaining: 2.4" in n.text for n in back.note)


_text = st.from_regex(r"[\w%().,;:+/µ≥-]+( [\w%().,;:+/µ≥-]+){0,5}", fullmatch=True)  # FHIR strings and codes
_p = st.floats(0.0, 1.0)


@st.composite
def _scores(draw) -> RiskScore:
    tasks = {}
    if draw(st.booleans()):
        tasks["mortality"] = TaskScore(value=draw(_p), kind="probability", calibration=draw(_text),
                                       detail=draw(st.fixed_dictionaries({}, optional={"drivers": _text})))
    if draw(st.booleans()):
        tasks["los_remaining"] = TaskScore(value=draw(st.floats(0, 60)), kind="days", calibration=draw(_text))
    if draw(st.booleans()):
        probabilities = draw(st.dictionaries(st.sampled_from(["none", "chd", "stroke", "hf"]), _p, min_size=1))
        tasks["cvd_90d"] = TaskScore(value=draw(_p), kind="class_probabilities", calibration=draw(_text),
                                     probabilities=probabilities)
    return RiskScore(score_id=draw(st.text("0123456789abcdef", min_size=24, max_size=24)), stay_id=draw(st.integers(1, 10**9)),
                     subject_id=draw(st.integers(1, 10**9)), scorer="medm2t", model_version=draw(_text),
                     scored_at=draw(st.datetimes(datetime(2100, 1, 1), datetime(2200, 1, 1))),
                     hours_since_admission=draw(st.none() | st.floats(0, 2000)), inputs_seen=draw(st.integers(0, 10**6)),
                     missing=tuple(draw(st.lists(_text, max_size=3))), tasks=tasks)


@hsettings(max_examples=300, deadline=None)
@given(_scores())
def test_the_worker_s_plain_json_equals_the_fhir_resources_model(score):
    """The worker writes risk_assessment_json without fhir.resources on the hot path: it must be the same
    resource that FHIR's own models build and validate."""
    fast, model = risk_assessment_json(score), risk_assessment(score)
    if model is None:
        assert fast is None
        return
    assert json.loads(fast) == json.loads(model.model_dump_json())


def test_the_schema_rejects_what_the_profile_does_not_allow():
    doc = json.loads(risk_assessment(_medm2t_score()).model_dump_json())
    for bad in ({**doc, "extra": 1}, {**doc, "prediction": []},
                {**doc, "prediction": [{**doc["prediction"][0], "probabilityDecimal": 1.5}]}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, _fhir_schema())


def test_a_points_score_has_no_risk_assessment():
    opened_at = T0
    view = StayView(stay_id=1, subject_id=1, now=opened_at + timedelta(hours=1), opened=None, measurements=[], ecgs=[])
    (score,) = News2Scorer().score_batch([view])
    assert risk_assessment(score) is None


def test_a_real_medm2t_score_maps_to_a_valid_risk_assessment():
    from stream.scorers.medm2t import MedM2TScorer
    from tests.helpers.stays import make_stay

    stay = make_stay(1, np.random.default_rng(0), hours=12, ecgs=1)
    opened, body = stay[0], stay[1:]
    view = StayView(stay_id=1, subject_id=1, now=opened.time + timedelta(hours=12), opened=opened,
                    measurements=[e for e in body if e.kind == "measurement"], ecgs=[e for e in body if e.kind == "ecg"])
    (score,) = MedM2TScorer.load(DEMO_CHECKPOINT, device="cpu").score_batch([view])
    score.score_id = "feedc0ffee"
    raw = risk_assessment(score).model_dump_json()
    jsonschema.validate(json.loads(raw), _fhir_schema(), format_checker=jsonschema.FormatChecker())
    ra = RiskAssessment.model_validate_json(raw)
    assert len(ra.prediction) == 4 and ra.method.coding[0].code == score.model_version


def _alert(state: str, reason: str, escalation: int = 0):
    from medm2t.events import Alert

    return Alert(alert_id="a1", stay_id=1, subject_id=2, scorer="news2", model_version="news2-rcp2017",
                 task="news2", level="urgent", state=state, reason=reason, value=5.0, at=datetime(2031, 1, 1),
                 escalation=escalation)


@pytest.mark.parametrize("state, reason, escalation", [
    ("not-acknowledged", "not acknowledged within 15 min of 08:00: still urgent", 1),
    ("level-rose", "NEWS2 7 (band high)", 0),
    ("raised", "NEWS2 5", 0),
])
def test_an_alert_record_reads_back_from_v1_as_it_was(state, reason, escalation):
    """The worker writes each record on risk.alerts.v1 too; Redis may hold v1 records from before v2:
    Alert.read upgrades them, and a v1 record validates against the published v1 schema."""
    from medm2t.events import Alert

    alert = _alert(state, reason, escalation)
    v1 = alert.as_v1().model_dump_json()
    jsonschema.validate(json.loads(v1), json.loads(Path("docs/schemas/alert.v1.schema.json").read_text()))
    assert json.loads(v1)["state"] == ("escalated" if state != "raised" else "raised")
    assert Alert.read(v1) == alert
    assert Alert.read(alert.model_dump_json()) == alert
    with pytest.raises(ValueError):
        Alert.read(v1.replace('"news2-rcp2017"', '1'))
