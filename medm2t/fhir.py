"""FHIR R4 `RiskAssessment` for every probability score, published on fhir.riskassessment.v1.

`risk_assessment_json(score)` builds the resource as plain JSON, once per score on the worker's hot path
(orjson: 0.8 µs a resource against the standard library's 12.5);
`risk_assessment(score)` is the same resource as a `fhir.resources` model (their R4B package: RiskAssessment
is the same in R4 and R4B), so FHIR's own validation runs on it, and tests/medm2t/test_schemas.py proves the two
equal over generated scores. `RiskAssessmentV1` is the closed profile of exactly what we publish: its JSON
Schema, exported by `medm2t schema export`, is the topic's contract (docs/schemas.md).

Mapping from a `RiskScore`:
- id / identifier: the score's deterministic score_id, so a replay republishes the same resources;
- subject / encounter: Patient/{subject_id}, Encounter/{stay_id};
- occurrenceDateTime: the clinical clock of the score (scored_at), written as UTC because FHIR needs a zone;
- method: the model version; basis: what the score saw (inputs, missing modalities);
- prediction[]: one per probability (in-hospital death; each 90-day CVD class), with `whenPeriod` as the
  horizon and `rationale` saying how far the number can be trusted (its calibration statement);
- note: the non-probability outputs (expected ICU days left), with their calibration, and the top drivers.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Literal

import orjson
from fhir.resources.R4B.riskassessment import RiskAssessment
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from medm2t.events import RiskScore, TaskScore
from medm2t.vocabulary import CVD_90D, CVD_NAMES, MORTALITY

SCORE_SYSTEM = "urn:medm2t:score"
MODEL_SYSTEM = "urn:medm2t:model"
OUTCOME_SYSTEM = "urn:medm2t:outcome"
CVD_DISPLAY = {c: name[0].upper() + name[1:] for c, name in CVD_NAMES.items() if c != "none"}
CVD_HORIZON = timedelta(days=90)


def risk_assessment_json(score: RiskScore) -> bytes | None:
    """The score as a FHIR RiskAssessment in JSON, or None when it holds no probability (NEWS2 points)."""
    resource = _resource(score)
    return None if resource is None else orjson.dumps(resource)


def risk_assessment(score: RiskScore) -> RiskAssessment | None:
    """The same resource, validated by fhir.resources (tests; not on the hot path)."""
    resource = _resource(score)
    return None if resource is None else RiskAssessment.model_validate(resource)


def _resource(score: RiskScore) -> dict | None:
    predictions = [p for name, task in score.tasks.items() for p in _predictions(score, name, task)]
    if not predictions:
        return None
    notes = [f"Expected ICU days remaining: {t.value:.1f} ({t.calibration})."
             for t in score.tasks.values() if t.kind == "days"]
    notes += [f"Top drivers of the {name} risk (share of its log-odds against a typical patient, exact for the "
              f"model's linear part): {t.detail['drivers']}." for name, t in score.tasks.items() if t.detail.get("drivers")]
    if score.missing:
        notes.append("Missing inputs: " + ", ".join(score.missing) + ".")
    at = _utc(score.scored_at)
    resource = {
        "resourceType": "RiskAssessment",
        "id": score.score_id,
        "identifier": [{"system": SCORE_SYSTEM, "value": score.score_id}],
        "status": "final",
        "method": {"coding": [{"system": MODEL_SYSTEM, "code": score.model_version}],
                   "text": f"{score.scorer} {score.model_version}"},
        "code": {"text": f"ICU risk assessment ({score.scorer})"},
        "subject": {"reference": f"Patient/{score.subject_id}"},
        "encounter": {"reference": f"Encounter/{score.stay_id}"},
        "occurrenceDateTime": _instant(at),
        "basis": [{"display": f"{score.inputs_seen} inputs of ICU stay {score.stay_id} available by {at.isoformat()}"}],
        "prediction": predictions,
    }
    if notes:
        resource["note"] = [{"text": n} for n in notes]
    return resource


def _predictions(score: RiskScore, name: str, task: TaskScore) -> list[dict]:
    at = _utc(score.scored_at)
    if name == MORTALITY and task.kind == "probability":
        # in-hospital death: from now until hospital discharge, which has no fixed end
        return [_prediction("death_in_hospital", "Death before hospital discharge", task.value,
                            {"start": _instant(at)}, task.calibration)]
    if name == CVD_90D and task.probabilities:
        # the label: a CVD admission within 90 days of ICU admission (replay/mimic.py)
        admitted = at - timedelta(hours=score.hours_since_admission or 0.0)
        horizon = {"start": _instant(admitted), "end": _instant(admitted + CVD_HORIZON)}
        return [_prediction(f"cvd_90d_{c}", f"{label} within 90 days of ICU admission", task.probabilities[c],
                            horizon, task.calibration)
                for c, label in CVD_DISPLAY.items() if c in task.probabilities]
    return []


def _prediction(code: str, text: str, p: float, when: dict, calibration: str) -> dict:
    return {"outcome": {"coding": [{"system": OUTCOME_SYSTEM, "code": code, "display": text}], "text": text},
            "probabilityDecimal": p, "whenPeriod": when, "rationale": f"Model output; {calibration}."}


def _instant(t: datetime) -> str:
    """FHIR's UTC form, as fhir.resources writes it: microseconds only when there are any, then 'Z'."""
    return t.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=timezone.utc)


# ---- The closed profile: what subscribers may rely on (its JSON Schema is the topic's contract) ---------


class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProfileCoding(_Closed):
    system: str
    code: str
    display: str | None = None


class ProfileConcept(_Closed):
    coding: list[ProfileCoding] | None = None
    text: str


class ProfileReference(_Closed):
    reference: str | None = None
    display: str | None = None


class ProfilePeriod(_Closed):
    start: AwareDatetime
    end: AwareDatetime | None = None


class ProfileIdentifier(_Closed):
    system: Literal["urn:medm2t:score"]
    value: str


class ProfilePrediction(_Closed):
    outcome: ProfileConcept
    probabilityDecimal: float = Field(ge=0.0, le=1.0)
    whenPeriod: ProfilePeriod = Field(description="The horizon the probability applies to.")
    rationale: str = Field(description="How far to trust the number: the task's calibration statement.")


class ProfileNote(_Closed):
    text: str


class RiskAssessmentV1(_Closed):
    """A FHIR R4 RiskAssessment as published on fhir.riskassessment.v1 (a strict subset of the resource)."""

    resourceType: Literal["RiskAssessment"]
    id: str = Field(description="The RiskScore's score_id.")
    identifier: list[ProfileIdentifier] = Field(min_length=1, max_length=1)
    status: Literal["final"]
    code: ProfileConcept
    subject: ProfileReference = Field(description="Patient/{subject_id}")
    encounter: ProfileReference = Field(description="Encounter/{stay_id}")
    occurrenceDateTime: AwareDatetime = Field(description="Clinical clock of the score, as UTC.")
    method: ProfileConcept = Field(description="Coding: urn:medm2t:model | model version.")
    basis: list[ProfileReference]
    prediction: list[ProfilePrediction] = Field(min_length=1)
    note: list[ProfileNote] | None = None
