"""Canonical clinical events: the one schema every reader yields and every consumer reads.

Downstream code (replay, worker, model, dashboard) never knows which source an event came from.
Every event carries `stay_id`, `subject_id`, its clinical `time`, the `available_time` at which it
became known (storetime where the source has it) and a deterministic `event_id` derived from its
source row, so a redelivered event is recognised and never double-counted.

Times are naive datetimes on the source's own clock (MIMIC shifts dates per patient).

Ingest is strict: `parse_event` is the one door through which messages from Kafka enter the worker. It
validates in pydantic strict mode (no coercion) and applies the clinical rules below, and raises
`InvalidEvent` (a ValueError) whose `reason` names the field and the rule but never the offending value.
Python-side construction of events (the readers' keyword arguments) is unchanged: lax types and none of the
ingest rules, so a reader can never crash on them; whatever a reader emits is checked when it is read back.

Ingest rules (constants below; see docs in each):
- message: at most MAX_MESSAGE_BYTES of UTF-8 JSON, one object, a known `kind`, no unknown fields;
- types: no coercion. Integers are accepted for float fields (97 means 97.0); bools are never numbers,
  numeric strings are never numbers, floats are never ids. JSON NaN/Infinity literals are rejected;
- clinical times: naive ISO 8601 strings `YYYY-MM-DD[T ]HH:MM[:SS[.ffffff]]` (no timezone, no numbers),
  year within YEAR_RANGE; available_time not before time;
- ids: stay_id, subject_id, hadm_id, study_id integers in [1, MAX_ID] (2**53 - 1, exact in JSON doubles);
  event_id 1-128 visible ASCII characters;
- measurement values: finite; within CONCEPT_RANGES for the bedside concept, within medm2t.items' `valid`
  range for a catalogue item, and |value| <= UNKNOWN_ITEM_BOUND otherwise; `concept` one of CONCEPT_RANGES;
  a measurement carries a value or a text;
- static features: finite, age / height_cm / weight_kg within STATIC_RANGES;
- ECG: leads exactly LEADS, fs within ECG_FS_RANGE, 1 <= n_samples <= ECG_MAX_SECONDS x fs (and at most
  ECG_MAX_SAMPLES), 0 < gain <= ECG_MAX_GAIN, `data` base64 of one zlib stream that inflates (bounded, never
  past the expected size) to exactly 2 x 12 x n_samples bytes; machine measurements among ECG_MEASUREMENTS,
  finite (|v| < 1e6) or null; statements and quality bounded.
"""
from __future__ import annotations

import hashlib
import math
import re
import zlib
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import (
    AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo,
    model_validator,
)

from medm2t import items as _catalogue
from medm2t.vocabulary import CVD_CLASSES, LEVEL_NAMES

SCHEMA_VERSION = 1

# The twelve standard leads, in the order every ECG is stored and shown.
LEADS: tuple[str, ...] = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")

# The nine MIMIC-IV-ECG machine measurements the model reads (sentinels already turned into None).
ECG_MEASUREMENTS: tuple[str, ...] = (
    "rr_interval", "p_onset", "p_end", "qrs_onset", "qrs_end", "t_end", "p_axis", "qrs_axis", "t_axis",
)


# ---- ingest limits ---------------------------------------------------------------------------------------

# A real 10 s 12-lead ECG at 500 Hz is 45-92 KB as JSON (223 records in ../shared/data/ecg-12lead); the
# longest of them, 60 s CPSC 2018 records, are up to 383 KB. Anything larger is not an event.
MAX_MESSAGE_BYTES = 512 * 1024
MAX_ID = 2**53 - 1                       # largest integer a JSON double (and so every JSON reader) holds exactly
# Clinical years: MIMIC-IV shifts dates into ~2100-2214, PhysioNet 2012 stays start on 2100-01-01, the
# synthetic cohort uses MIMIC-like years, MEDS keeps the source's; real (unshifted) data start after 1900.
YEAR_RANGE = (1900, 2300)
MAX_EVENT_ID_CHARS = 128
UNKNOWN_ITEM_BOUND = 1e9                 # |value| for items outside the catalogue and without a concept
ECG_FS_RANGE = (100.0, 2000.0)           # Hz
ECG_MAX_SECONDS = 60.0
ECG_MAX_SAMPLES = int(ECG_MAX_SECONDS * ECG_FS_RANGE[1])
ECG_MAX_GAIN = 10.0                      # mV per integer step (readers use 0.005)
ECG_MEASUREMENT_BOUND = 1e6
STATIC_RANGES: dict[str, tuple[float, float]] = {"age": (0.0, 150.0), "height_cm": (20.0, 300.0),
                                                  "weight_kg": (0.2, 700.0)}


class _Range:
    """A union of closed intervals, the lower end of the first optionally open."""

    __slots__ = ("parts", "lo_open", "text")

    def __init__(self, *parts: tuple[float, float], lo_open: bool = False, text: str = ""):
        self.parts, self.lo_open = parts, lo_open
        self.text = text or " or ".join(f"[{_fmt(a)}, {_fmt(b)}]" for a, b in parts)

    def __contains__(self, v: float) -> bool:
        for k, (lo, hi) in enumerate(self.parts):
            if (lo < v if (k == 0 and self.lo_open) else lo <= v) and v <= hi:
                return True
        return False


def _fmt(x: float) -> str:
    return f"{x:g}"


def _concept_ranges() -> dict[str, _Range]:
    # The catalogue's `valid` ranges ("impossible, not merely abnormal") for the bedside concepts, except:
    # a heart rate of 0 is rejected, FiO2 is a percent (21-100) or a fraction (0.21-1.0, see
    # stream/scorers/news2.on_oxygen), and PhysioNet 2012's total GCS is 3-15.
    out = {c: _Range(item.valid) for c, item in _catalogue.CONCEPT_ITEMS.items() if item.valid}
    out["hr"] = _Range((0.0, out["hr"].parts[0][1]), lo_open=True, text=f"(0, {_fmt(out['hr'].parts[0][1])}]")
    out["fio2"] = _Range((0.21, 1.0), (21.0, 100.0), text="[0.21, 1] (fraction) or [21, 100] (percent)")
    out["gcs"] = _Range((3.0, 15.0))
    return out


CONCEPT_RANGES: dict[str, _Range] = _concept_ranges()
_GENERIC = _Range((-UNKNOWN_ITEM_BOUND, UNKNOWN_ITEM_BOUND))


class InvalidEvent(ValueError):
    """A message that must not reach the model. `reason` (also str(exc)) is short, names the field and the
    rule, and never contains the offending value: it goes to logs and the dead-letter topic."""

    def __init__(self, field: str, rule: str, kind: str | None = None, more: int = 0):
        self.field, self.rule, self.kind = field, rule, kind
        head = f"invalid event ({kind})" if kind else "invalid event"
        self.reason = f"{head}: {field}: {rule}" + (f" (+{more} more)" if more else "")
        super().__init__(self.reason)


class _Rule(ValueError):
    """Raised by ingest validators; `field` overrides the location for model-level rules."""

    def __init__(self, rule: str, field: str | None = None):
        super().__init__(rule)
        self.rule, self.field = rule, field


_INGEST = {"medm2t_ingest": True}


def _ingest(info: ValidationInfo) -> bool:
    return bool(info.context) and info.context.get("medm2t_ingest", False)


def _id(v: int, info: ValidationInfo) -> int:
    if _ingest(info) and not 1 <= v <= MAX_ID:
        raise _Rule("must be an integer in [1, 2**53 - 1]")
    return v


_EVENT_ID = re.compile(rf"[!-~]{{1,{MAX_EVENT_ID_CHARS}}}")


def _event_id(v: str, info: ValidationInfo) -> str:
    if _ingest(info) and not _EVENT_ID.fullmatch(v):
        raise _Rule(f"must be 1-{MAX_EVENT_ID_CHARS} visible ASCII characters")
    return v


def _text(max_chars: int, required: bool = False):
    def check(v: str, info: ValidationInfo) -> str:
        if _ingest(info) and (len(v) > max_chars or (required and not v)):
            raise _Rule(f"must be {'1' if required else '0'}-{max_chars} characters")
        return v
    return AfterValidator(check)


_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?", re.ASCII)
_ZONE = re.compile(r".*(?:[Zz]|[+-]\d{2}(?::?\d{2})?)", re.ASCII)


def _time_input(v: Any, info: ValidationInfo) -> Any:
    if not _ingest(info) or isinstance(v, datetime):
        return v
    if isinstance(v, (bool, int, float)):
        raise _Rule("must be an ISO 8601 datetime string, not a number")
    if isinstance(v, str) and not _ISO.fullmatch(v):
        if _ISO.match(v) and _ZONE.fullmatch(v):
            raise _Rule("must be a naive datetime (no timezone: clinical times are on the source's clock)")
        raise _Rule("must be an ISO 8601 datetime YYYY-MM-DDTHH:MM[:SS[.ffffff]]")
    if isinstance(v, str):  # parsed here: strict mode would not take the string once a validator has seen it
        try:
            return datetime.fromisoformat(v)
        except ValueError:
            raise _Rule("must be a valid ISO 8601 datetime") from None
    return v


def _time_value(v: datetime, info: ValidationInfo) -> datetime:
    if _ingest(info):
        if v.tzinfo is not None:
            raise _Rule("must be a naive datetime (no timezone: clinical times are on the source's clock)")
        if not YEAR_RANGE[0] <= v.year <= YEAR_RANGE[1]:
            raise _Rule(f"year outside {YEAR_RANGE[0]}-{YEAR_RANGE[1]}")
    return v


def _number(lo: float | None = None, hi: float | None = None, lo_open: bool = False):
    def check(v: float | None, info: ValidationInfo) -> float | None:
        if v is None or not _ingest(info):
            return v
        if not math.isfinite(v):
            raise _Rule("must be finite")
        if lo is not None and (v <= lo if lo_open else v < lo) or hi is not None and v > hi:
            left = "(" if lo_open else "["
            raise _Rule(f"must be in {left}{_fmt(lo)}, {_fmt(hi)}]")
        return v
    return AfterValidator(check)


Id = Annotated[int, AfterValidator(_id)]
ClinicalTime = Annotated[datetime, BeforeValidator(_time_input), AfterValidator(_time_value)]


def _static(name: str):
    lo, hi = STATIC_RANGES[name]
    return _number(lo, hi)


def _inflate(data: bytes, expected: int) -> bytes:
    """Inflate one zlib stream to exactly `expected` bytes, never holding more than `expected` + 1 bytes
    (a zip bomb stops at the limit). Raises _Rule saying what is wrong."""
    d = zlib.decompressobj()
    try:
        out = d.decompress(data, expected) if expected > 0 else b""
        if len(out) < expected:
            raise _Rule("inflates to fewer bytes than 2 x leads x n_samples" if d.eof else "truncated zlib stream")
        if d.decompress(d.unconsumed_tail, 1):
            raise _Rule("inflates to more bytes than 2 x leads x n_samples")
    except zlib.error:
        raise _Rule("not a valid zlib stream") from None
    if not d.eof:
        raise _Rule("truncated zlib stream")
    if d.unused_data:
        raise _Rule("bytes after the end of the zlib stream")
    return out


def make_event_id(source: str, *parts: object) -> str:
    """A stable id for one source row: the same row always gets the same id."""
    raw = "|".join([source, *(str(p) for p in parts)])
    return hashlib.sha1(raw.encode()).hexdigest()[:24]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    event_id: Annotated[str, AfterValidator(_event_id)]
    stay_id: Id
    subject_id: Id
    time: ClinicalTime = Field(description="Clinical time (charttime) of the event.")
    available_time: ClinicalTime = Field(description="When the event became known (storetime where the source has it).")
    source: Annotated[str, _text(64, required=True)] = Field(
        description="Which reader produced it, e.g. 'mimic-iv', 'physionet2012', 'meds'.")

    @model_validator(mode="after")
    def _known_after_charted(self, info: ValidationInfo):
        if _ingest(info) and self.available_time < self.time:
            raise _Rule("must not be before time", field="available_time")
        return self


class StaticFeatures(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    gender: Literal["F", "M"] | None = None
    age: Annotated[float, _static("age")] | None = None
    admission_type: Annotated[str, _text(256)] | None = None
    admission_location: Annotated[str, _text(256)] | None = None
    first_careunit: Annotated[str, _text(256)] | None = None
    height_cm: Annotated[float, _static("height_cm")] | None = None
    weight_kg: Annotated[float, _static("weight_kg")] | None = None


class StayOpened(_Event):
    kind: Literal["stay_opened"] = "stay_opened"
    hadm_id: Id | None = None
    static: StaticFeatures
    bed: Annotated[str, _text(32)] | None = Field(
        default=None, description="Bed label on the ward, where the source knows it (ward-mode replays: 1..N).")


class Measurement(_Event):
    """One lab or vital value. `item` is the canonical item code after merges (a MIMIC itemid as text,
    or the source's own parameter name); `concept` names the vital it measures where it is one of the
    standard bedside concepts (hr, sbp, dbp, map, rr, spo2, fio2, temp, gcs), so rule scores and the
    dense-vitals encoder work across sources."""

    kind: Literal["measurement"] = "measurement"
    item: Annotated[str, _text(256, required=True)]
    label: Annotated[str, _text(256)] = ""
    category: Literal["lab", "vital"]
    concept: Annotated[str, AfterValidator(lambda v, info: _concept(v, info))] | None = None
    value: float | None = None
    text: Annotated[str, _text(1024)] | None = Field(
        default=None, description="Category of a categorical item (e.g. urine nitrite 'NEG').")
    unit: Annotated[str, _text(64)] | None = None
    source_item: Annotated[str, _text(256)] | None = Field(default=None, description="The source's own item id before merging.")

    @model_validator(mode="after")
    def _possible_value(self, info: ValidationInfo):
        if not _ingest(info):
            return self
        v = self.value
        if v is None:
            if self.text is None:
                raise _Rule("a measurement needs a value or a text", field="value")
            return self
        if not math.isfinite(v):
            raise _Rule("must be finite", field="value")
        if self.concept is not None:
            r = CONCEPT_RANGES[self.concept]
            if v not in r:
                raise _Rule(f"impossible for concept {self.concept}: must be in {r.text}", field="value")
        item = _catalogue.ITEMS.get(self.item)
        if item is not None and item.kind == "numeric" and item.valid is not None:
            lo, hi = item.valid
            if not lo <= v <= hi:
                raise _Rule(f"impossible for item {item.code}: must be in [{_fmt(lo)}, {_fmt(hi)}]", field="value")
        elif v not in _GENERIC:
            raise _Rule(f"must be in {_GENERIC.text} for an item without a known range", field="value")
        return self


def _concept(v: str, info: ValidationInfo) -> str:
    if _ingest(info) and v not in CONCEPT_RANGES:
        raise _Rule("unknown concept (expected one of " + ", ".join(CONCEPT_RANGES) + ")")
    return v


class Waveform(BaseModel):
    """A 12-lead waveform stored compactly: int16 samples (lead-major) x `gain` = millivolts, zlib-compressed."""

    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64")

    fs: Annotated[float, _number(*ECG_FS_RANGE)]
    leads: tuple[str, ...]
    n_samples: int
    gain: Annotated[float, _number(0.0, ECG_MAX_GAIN, lo_open=True)] = Field(description="Millivolts per integer step.")
    data: bytes

    @model_validator(mode="after")
    def _decodable(self, info: ValidationInfo):
        if not _ingest(info):
            return self
        if self.leads != LEADS:
            raise _Rule("must be exactly the 12 standard leads in order " + ",".join(LEADS), field="leads")
        limit = min(ECG_MAX_SAMPLES, int(ECG_MAX_SECONDS * self.fs))
        if not 1 <= self.n_samples <= limit:
            raise _Rule(f"must be in [1, {_fmt(ECG_MAX_SECONDS)} s x fs] (at most {ECG_MAX_SAMPLES})", field="n_samples")
        try:
            _inflate(self.data, 2 * len(self.leads) * self.n_samples)
        except _Rule as exc:
            raise _Rule(exc.rule, field="data") from None
        return self

    @classmethod
    def from_array(cls, signal_mv: np.ndarray, fs: float, leads: tuple[str, ...] = LEADS, gain: float = 0.005) -> Waveform:
        """`signal_mv`: (n_leads, n_samples) in mV. NaN samples are stored as 0 (flagged by the reader)."""
        arr = np.nan_to_num(np.asarray(signal_mv, dtype=np.float64), nan=0.0)
        ints = np.clip(np.round(arr / gain), -32768, 32767).astype("<i2")
        return cls(fs=fs, leads=tuple(leads), n_samples=arr.shape[1], gain=gain, data=zlib.compress(ints.tobytes(), 1))

    def to_array(self) -> np.ndarray:
        """(n_leads, n_samples) float32 millivolts."""
        try:
            raw = _inflate(self.data, 2 * len(self.leads) * self.n_samples)
        except _Rule as exc:
            raise ValueError(f"waveform data: {exc.rule}") from None
        ints = np.frombuffer(raw, dtype="<i2").reshape(len(self.leads), self.n_samples)
        return ints.astype(np.float32) * np.float32(self.gain)


class Ecg(_Event):
    kind: Literal["ecg"] = "ecg"
    study_id: Id
    waveform: Waveform
    measurements: Annotated[dict[str, float | None], AfterValidator(lambda v, info: _ecg_measurements(v, info))] = Field(
        default_factory=dict)
    statements: Annotated[tuple[Annotated[str, _text(1024)], ...], Field(max_length=64)] = ()
    quality: Annotated[tuple[Annotated[str, _text(4096)], ...], Field(max_length=64)] = Field(
        default=(), description="Reader warnings, e.g. missing leads or NaN samples.")


def _ecg_measurements(v: dict[str, float | None], info: ValidationInfo) -> dict[str, float | None]:
    if _ingest(info):
        if not v.keys() <= set(ECG_MEASUREMENTS):
            raise _Rule("unknown key (expected among " + ", ".join(ECG_MEASUREMENTS) + ")")
        if any(x is not None and not (math.isfinite(x) and abs(x) < ECG_MEASUREMENT_BOUND) for x in v.values()):
            raise _Rule(f"values must be finite with |value| < {_fmt(ECG_MEASUREMENT_BOUND)}, or null")
    return v


class StayClosed(_Event):
    kind: Literal["stay_closed"] = "stay_closed"


class Outcome(_Event):
    """Evaluation only: travels on its own topic, never read by the model."""

    kind: Literal["outcome"] = "outcome"
    hospital_death: bool | None = None
    deathtime: ClinicalTime | None = None
    icu_intime: ClinicalTime | None = None
    icu_outtime: ClinicalTime | None = None
    los_days: Annotated[float, _number(0.0, 36500.0)] | None = None
    cvd_90d: Literal[CVD_CLASSES] | None = None


Event = Annotated[Union[StayOpened, Measurement, Ecg, StayClosed, Outcome], Field(discriminator="kind")]
EVENT_TYPES: dict[str, type[_Event]] = {
    "stay_opened": StayOpened, "measurement": Measurement, "ecg": Ecg, "stay_closed": StayClosed, "outcome": Outcome,
}
_adapter: TypeAdapter = TypeAdapter(Event)


def parse_event(raw: bytes | bytearray | memoryview | str | dict) -> _Event:
    """Validate one event strictly (module docstring) and return it; raises InvalidEvent with a short reason.

    JSON (bytes or str, at most MAX_MESSAGE_BYTES of UTF-8) is validated in pydantic strict JSON mode. A dict is
    validated in strict Python mode: the objects `model_dump()` gives (datetime, tuple, bytes, nested dicts),
    not JSON-decoded text; pass JSON as bytes instead."""
    try:
        if isinstance(raw, dict):
            return _adapter.validate_python(raw, strict=True, context=_INGEST)
        if isinstance(raw, str):
            if len(raw) > MAX_MESSAGE_BYTES:  # cheap bound before encoding: a char is at least one byte
                raise InvalidEvent("message", f"larger than {MAX_MESSAGE_BYTES} bytes")
            try:
                raw = raw.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidEvent("message", "not valid UTF-8") from None
        elif isinstance(raw, (bytearray, memoryview)):
            raw = bytes(raw)
        elif not isinstance(raw, bytes):
            raise InvalidEvent("message", "must be JSON bytes, a JSON string or a dict")
        if len(raw) > MAX_MESSAGE_BYTES:
            raise InvalidEvent("message", f"larger than {MAX_MESSAGE_BYTES} bytes")
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidEvent("message", "not valid UTF-8") from None
        return _adapter.validate_json(raw, strict=True, context=_INGEST)
    except ValidationError as exc:
        raise _invalid(exc) from None


_KINDS = ("stay_opened", "measurement", "ecg", "stay_closed", "outcome")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")
_RULES = {
    "missing": "required field missing", "extra_forbidden": "unknown field",
    "float_type": "must be a JSON number", "float_parsing": "must be a JSON number",
    "int_type": "must be an integer", "int_parsing": "must be an integer", "int_from_float": "must be an integer",
    "string_type": "must be a string", "bool_type": "must be true or false", "bool_parsing": "must be true or false",
    "bytes_type": "must be a base64 string", "bytes_invalid_encoding": "must be valid base64",
    "datetime_type": "must be an ISO 8601 datetime string", "datetime_parsing": "must be a valid ISO 8601 datetime",
    "datetime_from_date_parsing": "must be a valid ISO 8601 datetime",
    "datetime_object_invalid": "must be a valid ISO 8601 datetime",
    "tuple_type": "must be an array", "list_type": "must be an array", "dict_type": "must be an object",
    "model_type": "must be an object", "model_attributes_type": "must be an object",
    "finite_number": "must be finite", "json_invalid": "malformed JSON", "json_type": "malformed JSON",
    "too_long": "too many items", "string_too_long": "too long",
}


def _invalid(exc: ValidationError) -> InvalidEvent:
    errors = exc.errors(include_url=False, include_input=False)
    first = errors[0]
    loc = list(first.get("loc", ()))
    kind = loc.pop(0) if loc and loc[0] in _KINDS else None
    typ = first.get("type", "")
    ctx = first.get("ctx") or {}
    err = ctx.get("error")
    if isinstance(err, _Rule):
        rule = err.rule
        if err.field:
            loc.append(err.field)
    elif typ == "union_tag_invalid":
        loc, rule = ["kind"], "unknown kind (expected one of " + ", ".join(_KINDS) + ")"
    elif typ == "union_tag_not_found":
        loc, rule = ["kind"], "required field missing"
    elif typ == "literal_error":
        rule = f"must be {ctx.get('expected', 'one of the allowed values')}"
    else:
        rule = _RULES.get(typ, f"invalid ({typ})")
    field = ".".join(str(p) if isinstance(p, int) or _NAME.fullmatch(str(p)) else "<key>" for p in loc) or "message"
    if not loc and typ in ("model_type", "model_attributes_type", "dict_type"):
        rule = "must be a JSON object"
    return InvalidEvent(field, rule, kind, len(errors) - 1)


def dump_event(event: _Event) -> bytes:
    return event.model_dump_json().encode()


# ---- Observation sets: several events of one stay in one input message (icu.events.v2) -----------------

MAX_SET_EVENTS = 1000  # members per observation set; a producer splits a larger set into several


InputEvent = Annotated[Union[StayOpened, Measurement, Ecg, StayClosed], Field(discriminator="kind")]


class ObservationSet(BaseModel):
    """Events of one stay that became available at the same clinical time, in one message: as an HL7 ORU
    message carries many OBX segments, or a FHIR Bundle several Observations. A Kafka message costs the
    worker a fixed amount whatever it carries, so a set of N events costs it once, not N times.

    The worker reads each member on its own (stream/validation.py): a bad member is dead-lettered with its
    index, and its good siblings are applied. This model is the published schema; `set_messages` writes the
    sets from events already serialised, so each event is serialised once."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["observation_set"]
    stay_id: int = Field(ge=1, le=MAX_ID, description="Every member's stay_id; also the message key.")
    events: list[InputEvent] = Field(min_length=1, max_length=MAX_SET_EVENTS,
                                     description="The input events, each exactly as it would travel alone.")


def set_messages(events: Sequence[_Event]) -> list[tuple[bytes, list[_Event]]]:
    """The input messages for `events` (one stay's, at one time), each with the events it carries, each
    event serialised once as dump_event writes it: the event itself if it is alone, else an ObservationSet,
    split where a set would pass MAX_SET_EVENTS or MAX_MESSAGE_BYTES (an event too large to share a message
    travels alone)."""
    if len(events) > 1 and (len({e.stay_id for e in events}) > 1 or any(e.kind == "outcome" for e in events)):
        raise ValueError("an observation set holds input events of one stay (outcomes travel alone)")
    head = b'{"kind":"observation_set","stay_id":%d,"events":[' % events[0].stay_id if events else b""
    messages, members, raws, size = [], [], [], 0
    for event in events:
        raw = dump_event(event)
        if raws and (len(raws) == MAX_SET_EVENTS or len(head) + size + len(raw) + 2 > MAX_MESSAGE_BYTES):
            messages.append((_set(head, raws), members))
            members, raws, size = [], [], 0
        members.append(event)
        raws.append(raw)
        size += len(raw) + 1
    if raws:
        messages.append((_set(head, raws), members))
    return messages


def _set(head: bytes, members: list[bytes]) -> bytes:
    return members[0] if len(members) == 1 else head + b",".join(members) + b"]}"


# ---- Outputs of the worker: risk scores, alerts, dead letters -------------------------------------------


# Decimal digits a model's published values keep, by TaskScore kind: batched float32 inference differs in the
# last bits with the batch's shape, and those digits carry no information. Rule points are exact.
PUBLISHED_DIGITS = {"probability": 4, "class_probabilities": 4, "days": 3}


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

    score_id: str = Field("", description="Deterministic id of (stay, scorer, model version, scored_at): "
                                          "a redelivered score has the same id, so subscribers can drop it.")
    stay_id: int
    subject_id: int
    scorer: str = Field(description="'news2' or 'medm2t'.")
    model_version: str
    scored_at: datetime = Field(description="Clinical clock: the latest available_time the score has seen.")
    hours_since_admission: float | None = None
    tasks: dict[str, TaskScore]
    inputs_seen: int = 0
    missing: tuple[str, ...] = Field(default=(), description="Inputs the scorer wanted but did not have.")


AlertState = Literal["raised", "level-rose", "not-acknowledged", "de-escalated", "acknowledged", "snoozed",
                     "unsnoozed", "re-presented", "commented", "cleared"]
ESCALATIONS: tuple[AlertState, ...] = ("level-rose", "not-acknowledged")  # the two ways an alert escalates


class Alert(BaseModel):
    """One record of an alert's lifecycle (IHE ACM-like): raised -> acknowledged / snoozed -> level-rose or
    not-acknowledged -> cleared, each state change made by the engine or by a person. The records of one stay,
    in order, are the alert audit trail. risk.alerts.v2; `as_v1()` gives the deprecated v1 record."""

    model_config = ConfigDict(extra="forbid")

    alert_id: str
    stay_id: int
    subject_id: int
    scorer: str
    model_version: str
    task: str
    level: Literal[LEVEL_NAMES]
    state: AlertState = Field(description="'level-rose': the signal crossed a higher level; 'not-acknowledged': "
                                          "nobody acknowledged it in time while its condition stood. 'commented' "
                                          "changes nothing, it records a note.")
    reason: str
    value: float = Field(description="The rule's signal in the score that caused the record (the latest score "
                                     "for a person's action).")
    at: datetime = Field(description="Clinical clock of the record.")
    episode_id: str = Field("", description="alert_id of the 'raised' record that opened this alert; every later "
                                            "record of the same alert carries it. Actions name it or any record of it.")
    escalation: int = Field(0, ge=0, description="Times this alert escalated because nobody acknowledged it.")
    acknowledged_by: str | None = Field(None, description="Who acknowledged the alert at its current level.")
    snoozed_until: datetime | None = Field(None, description="Clinical clock the snooze ends at, while snoozed.")
    by: str = Field("system", description="Who made the change: 'system' for the alert engine, else the user.")
    wall_at: datetime | None = Field(None, description="Wall clock (UTC) the record was made.")
    score_id: str | None = Field(None, description="The score that caused it (engine records).")
    action_id: str | None = Field(None, description="The AlertAction that caused it (a person's records).")

    def as_v1(self) -> AlertV1:
        """The same record for risk.alerts.v1, which has one state, 'escalated', for both escalations."""
        return AlertV1.model_construct(**{**dict(self), "state": "escalated" if self.state in ESCALATIONS
                                          else self.state})

    @classmethod
    def read(cls, raw: str | bytes) -> Alert:
        """A record of either version (Redis keeps v1 records written before v2), as v2."""
        try:
            return cls.model_validate_json(raw)
        except ValidationError as v2_error:
            try:
                return AlertV1.model_validate_json(raw).upgraded()
            except ValidationError:
                raise v2_error from None  # not a v1 record either: say what v2 wants


AlertStateV1 = Literal["raised", "escalated", "de-escalated", "acknowledged", "snoozed", "unsnoozed",
                       "re-presented", "commented", "cleared"]


class AlertV1(Alert):
    """One record of an alert's lifecycle (IHE ACM-like): raised -> acknowledged / snoozed -> escalated ->
    cleared, each state change made by the engine or by a person. The records of one stay, in order, are the
    alert audit trail. Fields added after the first version have defaults, so older records still read."""

    model_config = ConfigDict(extra="forbid", title="Alert")

    state: AlertStateV1 = Field(description="'escalated' with the same escalation count: the level rose; with the "
                                            "count one higher: nobody acknowledged it in time. 'commented' changes "
                                            "nothing, it records a note.")

    def upgraded(self) -> Alert:
        """As v2. A v1 'escalated' record says which escalation it was only in its reason."""
        state = self.state
        if state == "escalated":
            state = "not-acknowledged" if self.reason.startswith("not acknowledged") else "level-rose"
        return Alert(**{**dict(self), "state": state})


def _who(v: str) -> str:
    if not v.strip():
        raise ValueError("must name who acts (a user name, not blank)")
    return v.strip()


class AlertAction(BaseModel):
    """A person acting on an alert, sent to risk.alert-actions.v1 (keyed by stay_id). `action_id` makes it
    idempotent: the same action sent twice is applied once. The worker dead-letters an action on an alert it
    does not know, on one that is no longer open (all but comment), a snooze past the maximum or without a reason."""

    model_config = ConfigDict(extra="forbid")

    action_id: Annotated[str, Field(min_length=1, max_length=128)]
    alert_id: Annotated[str, Field(min_length=1, max_length=128)]
    stay_id: int = Field(ge=1)
    action: Literal["ack", "snooze", "unsnooze", "comment"]
    by: Annotated[str, Field(max_length=128), AfterValidator(_who)]
    reason: Annotated[str, Field(max_length=500)] | None = Field(None, description="Required for snooze and comment.")
    snooze_minutes: float | None = Field(None, gt=0, description="Snooze length in clinical minutes (snooze only).")
    at: datetime = Field(description="Wall clock (UTC) of the action.")

    @model_validator(mode="after")
    def _complete(self):
        if self.action in ("snooze", "comment") and not (self.reason or "").strip():
            raise ValueError(f"a {self.action} needs a reason")
        if self.action == "snooze" and self.snooze_minutes is None:
            raise ValueError("a snooze needs snooze_minutes")
        if self.action != "snooze" and self.snooze_minutes is not None:
            raise ValueError("snooze_minutes belongs to a snooze only")
        return self


class DeadLetter(BaseModel):
    """Where a rejected message is and why: enough to find it on its topic, and no patient data."""

    model_config = ConfigDict(extra="forbid")

    topic: str
    partition: int | None = None
    offset: int | None = None
    reason: str = Field(description="Why it was rejected: field and rule, never the value (no patient data).")
    at: datetime = Field(description="Wall clock (UTC) when it was rejected.")


OUTPUT_TYPES: dict[str, type[BaseModel]] = {"risk_score": RiskScore, "alert": Alert, "alert_action": AlertAction,
                                            "dead_letter": DeadLetter}
# Versions other than SCHEMA_VERSION: the message types that moved to a new topic version, and the older
# versions still published beside them (docs/schemas.md, the compatibility rule).
VERSIONS: dict[str, dict[int, type[BaseModel]]] = {"alert": {1: AlertV1, 2: Alert},
                                                   "observation_set": {2: ObservationSet}}
