"""Canonical clinical events: the one schema every reader yields and every consumer reads.

Downstream code (replay, worker, model, dashboard) never knows which source an event came from.
Every event carries `stay_id`, `subject_id`, its clinical `time`, the `available_time` at which it
became known (storetime where the source has it) and a deterministic `event_id` derived from its
source row, so a redelivered event is recognised and never double-counted.

Times are naive datetimes on the source's own clock (MIMIC shifts dates per patient).
"""
from __future__ import annotations

import hashlib
import json
import zlib
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1

# The twelve standard leads, in the order every ECG is stored and shown.
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# The nine MIMIC-IV-ECG machine measurements the model reads (sentinels already turned into None).
ECG_MEASUREMENTS: tuple[str, ...] = (
    "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end", "p_axis", "qrs_axis", "t_axis",
)


def make_event_id(source: str, *parts: object) -> str:
    """A stable id for one source row: the same row always gets the same id."""
    raw = "|".join([source, *(str(p) for p in parts)])
    return hashlib.sha1(raw.encode()).hexdigest()[:24]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    event_id: str
    stay_id: int
    subject_id: int
    time: datetime = Field(description="Clinical time (charttime) of the event.")
    available_time: datetime = Field(description="When the event became known (storetime where the source has it).")
    source: str = Field(description="Which reader produced it, e.g. 'mimic-iv', 'physionet2012', 'meds'.")


class StaticFeatures(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gender: Literal["F", "M"] | None = None
    age: float | None = None
    admission_type: str | None = None
    admission_location: str | None = None
    first_careunit: str | None = None
    height_cm: float | None = None
    weight_kg: float | None = None


class StayOpened(_Event):
    kind: Literal["stay_opened"] = "stay_opened"
    hadm_id: int | None = None
    static: StaticFeatures


class Measurement(_Event):
    """One lab or vital value. `item` is the canonical item code after merges (a MIMIC itemid as text,
    or the source's own parameter name); `concept` names the vital it measures where it is one of the
    standard bedside concepts (hr, sbp, dbp, map, rr, spo2, fio2, temp, gcs), so rule scores and the
    dense-vitals encoder work across sources."""

    kind: Literal["measurement"] = "measurement"
    item: str
    label: str = ""
    category: Literal["lab", "vital"]
    concept: str | None = None
    value: float | None = None
    text: str | None = Field(default=None, description="Category of a categorical item (e.g. urine nitrite 'NEG').")
    unit: str | None = None
    source_item: str | None = Field(default=None, description="The source's own item id before merging.")


class Waveform(BaseModel):
    """A 12-lead waveform stored compactly: int16 samples (lead-major) x `gain` = millivolts, zlib-compressed."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    fs: float
    leads: tuple[str, ...]
    n_samples: int
    gain: float = Field(description="Millivolts per integer step.")
    data: bytes

    @classmethod
    def from_array(cls, signal_mv: np.ndarray, fs: float, leads: tuple[str, ...] = LEADS, gain: float = 0.005) -> Waveform:
        """`signal_mv`: (n_leads, n_samples) in mV. NaN samples are stored as 0 (flagged by the reader)."""
        arr = np.nan_to_num(np.asarray(signal_mv, dtype=np.float64), nan=0.0)
        ints = np.clip(np.round(arr / gain), -32768, 32767).astype("<i2")
        return cls(fs=fs, leads=tuple(leads), n_samples=arr.shape[1], gain=gain, data=zlib.compress(ints.tobytes(), 1))

    def to_array(self) -> np.ndarray:
        """(n_leads, n_samples) float32 millivolts."""
        ints = np.frombuffer(zlib.decompress(self.data), dtype="<i2").reshape(len(self.leads), self.n_samples)
        return ints.astype(np.float32) * np.float32(self.gain)


class Ecg(_Event):
    kind: Literal["ecg"] = "ecg"
    study_id: int
    waveform: Waveform
    measurements: dict[str, float | None] = Field(default_factory=dict)
    statements: tuple[str, ...] = ()
    quality: tuple[str, ...] = Field(default=(), description="Reader warnings, e.g. missing leads or NaN samples.")


class StayClosed(_Event):
    kind: Literal["stay_closed"] = "stay_closed"


class Outcome(_Event):
    """Evaluation only: travels on its own topic, never read by the model."""

    kind: Literal["outcome"] = "outcome"
    hospital_death: bool | None = None
    deathtime: datetime | None = None
    icu_intime: datetime | None = None
    icu_outtime: datetime | None = None
    los_days: float | None = None
    cvd_90d: Literal["none", "chd", "stroke", "hf"] | None = None


Event = Annotated[Union[StayOpened, Measurement, Ecg, StayClosed, Outcome], Field(discriminator="kind")]
EVENT_TYPES: dict[str, type[_Event]] = {
    "stay_opened": StayOpened, "measurement": Measurement, "ecg": Ecg, "stay_closed": StayClosed, "outcome": Outcome,
}
_adapter: TypeAdapter = TypeAdapter(Event)


def parse_event(raw: bytes | str | dict) -> _Event:
    """Validate one event from JSON (bytes/str) or a dict; raises pydantic.ValidationError with the reason."""
    if isinstance(raw, dict):
        return _adapter.validate_python(raw)
    return _adapter.validate_json(raw)


def dump_event(event: _Event) -> bytes:
    return event.model_dump_json().encode()


def export_schemas(out_dir: Path) -> list[Path]:
    """Write one JSON Schema per event type (for subscribers in other languages)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for kind, model in {**EVENT_TYPES, **OUTPUT_TYPES}.items():
        path = out_dir / f"{kind}.v{SCHEMA_VERSION}.schema.json"
        path.write_text(json.dumps(model.model_json_schema(mode="serialization"), indent=2) + "\n")
        written.append(path)
    return written


# ---- Outputs of the worker: risk scores, alerts, dead letters -------------------------------------------


class TaskScore(BaseModel):
    """One task's score. `kind` says what the number is; `calibration` says how far to trust it as stated."""

    model_config = ConfigDict(extra="forbid")

    value: float
    kind: Literal["points", "probability", "days", "class_probabilities"]
    band: str | None = None
    probabilities: dict[str, float] | None = None
    calibration: str = Field(description="e.g. 'rule score (RCP 2017), not a probability' or 'uncalibrated'.")
    detail: dict[str, float | int | str | None] = Field(default_factory=dict)


class RiskScore(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stay_id: int
    subject_id: int
    scorer: str = Field(description="'news2' or 'medm2t'.")
    model_version: str
    scored_at: datetime = Field(description="Clinical clock: the latest available_time the score has seen.")
    hours_since_admission: float | None = None
    tasks: dict[str, TaskScore]
    inputs_seen: int = 0
    missing: tuple[str, ...] = Field(default=(), description="Inputs the scorer wanted but did not have.")


class Alert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    alert_id: str
    stay_id: int
    subject_id: int
    scorer: str
    model_version: str
    task: str
    level: Literal["info", "urgent", "emergency"]
    state: Literal["raised", "escalated", "cleared"]
    reason: str
    value: float
    at: datetime


class DeadLetter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    reason: str
    payload: str = Field(description="The original message, truncated to 4 KB.")
    at: datetime


OUTPUT_TYPES: dict[str, type[BaseModel]] = {"risk_score": RiskScore, "alert": Alert, "dead_letter": DeadLetter}
