"""FHIR R4 `RiskAssessment` for every probability score, published on fhir.riskassessment.v1.

`risk_assessment(score)` builds the resource with the `fhir.resources` models (their R4B package: the
RiskAssessment resource is the same in R4 and R4B), so a message that leaves the worker has passed FHIR's
own validation. `RiskAssessmentV1` is the closed profile of exactly what we publish: its JSON Schema,
exported by `medm2t schema export`, is the topic's contract (docs/schemas.md).

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

from fhir.resources.R4B.annotation import Annotation
from fhir.resources.R4B.codeableconcept import CodeableConcept
from fhir.resources.R4B.coding import Coding
from fhir.resources.R4B.identifier import Identifier
from fhir.resources.R4B.period import Period
from fhir.resources.R4B.reference import Reference
from fhir.resources.R4B.riskassessment import RiskAssessment, RiskAssessmentPrediction
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from medm2t.events import RiskScore, TaskScore

SCORE_SYSTEM = "urn:medm2t:score"
MODEL_SYSTEM = "urn:medm2t:model"
OUTCOME_SYSTEM = "urn:medm2t:outcome"
CVD_DISPLAY = {"chd": "Coronary heart disease", "stroke": "Stroke", "hf": "Heart failure"}
CVD_HORIZON = timedelta(days=90)


def risk_assessment(score: RiskScore) -> RiskAssessment | None:
    """The score as a FHIR RiskAssessment, or None when it holds no probability (NEWS2 points)."""
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
    return RiskAssessment(
        id=score.score_id,
        identifier=[Identifier(system=SCORE_SYSTEM, value=score.score_id)],
        status="final",
        code=CodeableConcept(text=f"ICU risk assessment ({score.scorer})"),
        subject=Reference(reference=f"Patient/{score.subject_id}"),
        encounter=Reference(reference=f"Encounter/{score.stay_id}"),
        occurrenceDateTime=at,
        method=CodeableConcept(coding=[Coding(system=MODEL_SYSTEM, code=score.model_version)],
                               text=f"{score.scorer} {score.model_version}"),
        basis=[Reference(display=f"{score.inputs_seen} inputs of ICU stay {score.stay_id} "
                                 f"available by {at.isoformat()}")],
        prediction=predictions,
        note=[Annotation(text=n) for n in notes] or None,
    )


def _predictions(score: RiskScore, name: str, task: TaskScore) -> list[RiskAssessmentPrediction]:
    at = _utc(score.scored_at)
    if name == "mortality" and task.kind == "probability":
        # in-hospital death: from now until hospital discharge, which has no fixed end
        return [_prediction("death_in_hospital", "Death before hospital discharge", task.value,
                            Period(start=at), task.calibration)]
    if name == "cvd_90d" and task.probabilities:
        # the label: a CVD admission within 90 days of ICU admission (replay/mimic.py)
        admitted = at - timedelta(hours=score.hours_since_admission or 0.0)
        horizon = Period(start=admitted, end=admitted + CVD_HORIZON)
        return [_prediction(f"cvd_90d_{c}", f"{label} within 90 days of ICU admission", task.probabilities[c],
                            horizon, task.calibration)
                for c, label in CVD_DISPLAY.items() if c in task.probabilities]
    return []


def _prediction(code: str, text: str, p: float, when: Period, calibration: str) -> RiskAssessmentPrediction:
    return RiskAssessmentPrediction(
        outcome=CodeableConcept(coding=[Coding(system=OUTCOME_SYSTEM, code=code, display=text)], text=text),
        probabilityDecimal=p, whenPeriod=when, rationale=f"Model output; {calibration}.")


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
