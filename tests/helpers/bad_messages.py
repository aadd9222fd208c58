"""Bad Kafka message values, built from good ones, for the strict-ingest tests and for feeding a real worker.

    bad_messages(n, seed, good=None) -> [(value_bytes, expected_reason_fragment or None), ...]

`good` is a list of good event JSON values (`dump_event(e)`); without it a small built-in base of every kind
the worker reads is used (`example_messages()`); `synthetic_messages()` gives one from a small synthetic
cohort. Output is deterministic for (n, seed, good) and fast (10,000 messages in a few seconds; about 0.5 %
of them are ~0.5-1 MB oversize payloads). Every message must be rejected by `medm2t.events.parse_event` with
InvalidEvent, and its reason must contain the fragment when one is given.

Hypothesis strategies: `bad_message(good)`, `good_message(good)`, `absurd_measurement(good)` and
`possible_measurement(good)`; `bad_message_cases` also returns the mutation name and the planted value (the
text that must never appear in a reason).
"""
from __future__ import annotations

import base64
import copy
import json
import random
import zlib
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Callable, NamedTuple, Sequence

import numpy as np
from hypothesis import strategies as st

from medm2t.events import (
    CONCEPT_RANGES, ECG_MEASUREMENTS, LEADS, MAX_MESSAGE_BYTES, Ecg, Measurement, StaticFeatures, StayClosed,
    StayOpened, Waveform, dump_event, make_event_id,
)
from medm2t.items import CONCEPT_ITEMS


class Case(NamedTuple):
    data: bytes
    fragment: str | None      # a substring the rejection reason must contain (None: no single expected reason)
    planted: str | None       # the offending value's text (None: nothing distinctive), never in the reason
    mutation: str


# ---- good bases --------------------------------------------------------------------------------------------

T0 = datetime(2150, 3, 4, 5, 6, 7)
NORMAL = {"hr": 88.0, "sbp": 121.0, "dbp": 71.0, "map": 88.0, "rr": 16.0, "spo2": 97.0, "fio2": 40.0, "temp": 37.2,
          "gcs_eye": 4.0, "gcs_verbal": 5.0, "gcs_motor": 6.0}


@lru_cache(maxsize=1)
def example_messages() -> tuple[bytes, ...]:
    """A deterministic good base: a stay_opened, a measurement per bedside concept, labs (catalogue, unknown
    item, categorical), a 10 s 500 Hz ECG and a stay_closed, as the JSON a replay would send."""
    sid, subj = 30000001, 10000001
    common = dict(stay_id=sid, subject_id=subj, source="mimic-iv")
    events = [StayOpened(event_id=make_event_id("ex", "open"), time=T0, available_time=T0, hadm_id=20000001,
                         static=StaticFeatures(gender="F", age=67.0, admission_type="EW EMER.",
                                               first_careunit="Medical Intensive Care Unit (MICU)", height_cm=165.0,
                                               weight_kg=71.5), **common)]
    for k, (concept, value) in enumerate(NORMAL.items()):
        item = CONCEPT_ITEMS[concept]
        t = T0 + timedelta(minutes=10 + k)
        events.append(Measurement(event_id=make_event_id("ex", concept), time=t, available_time=t + timedelta(minutes=2),
                                  item=item.code, label=item.label, category="vital", concept=concept, value=value,
                                  unit=item.unit, source_item=item.code, **common))
    t = T0 + timedelta(hours=1)
    events += [
        Measurement(event_id=make_event_id("ex", "k"), time=t, available_time=t + timedelta(hours=1), item="50971",
                    label="Potassium", category="lab", value=4.1, unit="mEq/L", source_item="50971", **common),
        Measurement(event_id=make_event_id("ex", "unknown"), time=t, available_time=t, item="LAB//99999//U",
                    label="LAB//99999//U", category="lab", value=12345.0, source_item="LAB//99999//U", **common),
        Measurement(event_id=make_event_id("ex", "nitrite"), time=t, available_time=t, item="51487",
                    label="Nitrite (urine)", category="lab", text="NEG", source_item="51487", **common),
        Measurement(event_id=make_event_id("ex", "gcs"), time=t, available_time=t, item="GCS", label="GCS",
                    category="vital", concept="gcs", value=14.0, source_item="GCS", **{**common, "source": "physionet2012"}),
    ]
    n = 5000
    x = np.arange(n) / 500.0
    signal = np.stack([0.8 * np.sin(2 * np.pi * 1.2 * x + k) * np.exp(-((x * 1.2) % 1 - 0.3) ** 2 / 0.002)
                       for k in range(len(LEADS))])
    events.append(Ecg(event_id=make_event_id("ex", "ecg"), time=t, available_time=t, study_id=40000001,
                      waveform=Waveform.from_array(signal, fs=500.0), statements=("Sinus rhythm", "Normal ECG"),
                      measurements={**dict.fromkeys(ECG_MEASUREMENTS), "rr_interval": 833.0, "qrs_axis": 45.0},
                      **{**common, "source": "mimic-iv-ecg"}))
    t = T0 + timedelta(days=2)
    events.append(StayClosed(event_id=make_event_id("ex", "close"), time=t, available_time=t, **common))
    return tuple(dump_event(e) for e in events)


def synthetic_messages(stays: int = 3, seed: int = 0) -> list[bytes]:
    """Every non-outcome event of a small synthetic cohort (replay.synth + the MIMIC reader) as JSON."""
    import tempfile
    from pathlib import Path

    from replay.sources import parse_spec
    from replay.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        generate(stays, seed, Path(tmp), progress=False)
        return [dump_event(e) for events in parse_spec(f"synth:{tmp}").stays() for e in events if e.kind != "outcome"]


# ---- mutations ---------------------------------------------------------------------------------------------
# Each takes (rng, event dict, original bytes) and returns (bytes, fragment, planted) or None when it does not
# apply to this event. Fragments start with a space and end with ': ' so ' time: ' never matches 'available_time'.

Out = tuple[bytes, str | None, str | None] | None
_NUM = "__medm2t_number__"


def _dump(d: dict, literal: str | None = None) -> bytes:
    raw = json.dumps(d, separators=(",", ":"), ensure_ascii=False).encode()
    return raw.replace(f'"{_NUM}"'.encode(), literal.encode()) if literal is not None else raw


def _f(field: str) -> str:
    return f" {field}: "


def _set(field: str, choices: Sequence, kinds: tuple[str, ...] | None = None, path: tuple[str, ...] = ()):
    """Set `path + field` to one of `choices` (a callable gets the dict and the rng)."""
    def mutate(rng: random.Random, d: dict, raw: bytes) -> Out:
        if kinds and d.get("kind") not in kinds:
            return None
        target = d
        for p in path:
            target = target.get(p) if isinstance(target, dict) else None
        if not isinstance(target, dict):
            return None
        value = rng.choice(choices)
        if callable(value):
            value = value(d, rng)
        if isinstance(value, _Literal):
            target[field] = _NUM
            return _dump(d, value.text), _f(".".join((*path, field))), value.text
        target[field] = value
        return _dump(d), _f(".".join((*path, field))), _planted(value)
    mutate.__name__ = "set_" + ".".join((*path, field))
    mutate.kinds = kinds
    return mutate


class _Literal:
    """A number written into the JSON text as is (NaN, Infinity, 1e400)."""

    def __init__(self, text: str):
        self.text = text


def _planted(value) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        text = json.dumps(value)
        return text if len(text) >= 4 else None
    if isinstance(value, str):
        return value if len(value) >= 4 else None
    return None


NONFINITE = [_Literal("NaN"), _Literal("Infinity"), _Literal("-Infinity"), _Literal("1e400"), _Literal("-1e999")]
NOT_A_NUMBER = ["97", "97.5", True, False, [97], {"v": 97}, "NaN", ""]
BAD_IDS = [-1, 0, -(2**63), 2**53, 2**63, 10**30]
NOT_AN_ID = ["12", "30000001", 12.0, 1.5, True, None, [1], {"id": 1}, ""]
BAD_EVENT_IDS = ["", "a" * 129, "x" * 5000, "has space", "tab\there", "line\nbreak", "\x00nul", "ééééé", "id\u202e"]
BAD_TIMES = [12345, 1.7e9, -1, True, None, "12345", "1700000000", "2150-01-01T08:00:00Z", "2150-01-01T08:00:00+02:00",
             "2150-01-01 08:00:00-0500", "2150-01-01T08:00:00.000+00:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59",
             "1899-12-31T23:59:59", "2301-01-01T00:00:00", "2150-13-01T00:00:00", "2150-02-30T00:00:00",
             "2150-01-01T25:00:00", "2150-01-01", "08:00:00", "yesterday", "", "2150-01-01T08:00:00.1234567",
             "２１５０-01-01T08:00:00", [2150, 1, 1], {"iso": "2150-01-01T08:00:00"}]

# Impossible (not merely abnormal) values per concept; every one lies outside CONCEPT_RANGES.
ABSURD: dict[str, list[float]] = {
    "hr": [1e9, -5.0, 0.0, -0.0, 401.0, 1000.0, -1e-9], "sbp": [-1.0, 400.5, 1e6, -120.0], "dbp": [-1.0, 301.0, 1e5],
    "map": [-10.0, 300.1, 1e7], "rr": [-1.0, 201.0, 1e5], "spo2": [500.0, 100.1, -1.0, 1e3],
    "fio2": [1e6, 0.0, 0.2, 5.0, 20.9, 100.5, -21.0, 1.01, 2.0],
    "temp": [-273.0, -273.15, 1e100, 9.9, 50.1, 98.6, 310.15, 0.0], "gcs": [0.0, 2.0, 16.0, 100.0, -3.0],
    "gcs_eye": [0.0, 5.0, 4.5, -1.0], "gcs_verbal": [0.0, 6.0, 15.0], "gcs_motor": [0.0, 7.0, 60.0],
}
# Catalogue items without a concept, with values outside their medm2t.items `valid` range.
ABSURD_ITEMS = [("50983", "Sodium", [10.0, 1000.0, -140.0]), ("223830", "PH (Arterial)", [14.0, 5.9, 0.0, 74.0]),
                ("50971", "Potassium", [31.0, -4.0, 4100.0]), ("51222", "Hemoglobin", [31.0, -1.0]),
                ("50813", "Lactate", [101.0, -0.5]), ("50912", "Creatinine", [1e3, -0.1])]


def _absurd_concept(rng: random.Random, d: dict, raw: bytes) -> Out:
    if d.get("kind") != "measurement":
        return None
    concept = rng.choice(sorted(ABSURD))
    value = rng.choice(ABSURD[concept]) if rng.random() < 0.7 else _outside(rng, concept)
    _as_concept(d, concept)
    if rng.random() < 0.1:   # an absurd value written as an integer literal
        if float(value).is_integer() and abs(value) < 1e15:
            value = int(value)
    d["value"] = value
    return _dump(d), _f("value"), _planted(value)


def _as_concept(d: dict, concept: str) -> None:
    d["concept"], d["category"] = concept, "vital"
    if concept in CONCEPT_ITEMS:
        d["item"] = d["source_item"] = CONCEPT_ITEMS[concept].code
        d["label"], d["unit"] = CONCEPT_ITEMS[concept].label, CONCEPT_ITEMS[concept].unit
    else:
        d["item"] = d["source_item"] = d["label"] = "GCS"
        d["unit"] = None


def _outside(rng: random.Random, concept: str) -> float:
    """A random finite value outside the concept's range (below, in a gap, or above)."""
    r = CONCEPT_RANGES[concept]
    lo, hi = r.parts[0][0], r.parts[-1][1]
    pick = rng.random()
    if pick < 0.4:
        return lo - (0.0 if r.lo_open else 1e-6) - abs(rng.lognormvariate(0, 3))
    if pick < 0.8 or len(r.parts) == 1:
        return hi + 1e-6 + abs(rng.lognormvariate(0, 3))
    return rng.uniform(r.parts[0][1] + 1e-6, r.parts[1][0] - 1e-6)


def _absurd_item(rng: random.Random, d: dict, raw: bytes) -> Out:
    if d.get("kind") != "measurement":
        return None
    code, label, values = rng.choice(ABSURD_ITEMS)
    value = rng.choice(values)
    d.update(item=code, source_item=code, label=label, category="lab", concept=None, value=value, text=None)
    return _dump(d), _f("value"), _planted(value)


def _absurd_unknown_item(rng: random.Random, d: dict, raw: bytes) -> Out:
    if d.get("kind") != "measurement":
        return None
    value = rng.choice([1e10, -1e10, 1e300, -1.7976931348623157e308, 1e9 + 1])
    d.update(item="LAB//77777//U", source_item="LAB//77777//U", label="Unknown", concept=None, value=value)
    return _dump(d), _f("value"), _planted(value)


def _nonfinite_value(rng: random.Random, d: dict, raw: bytes) -> Out:
    if d.get("kind") != "measurement":
        return None
    lit = rng.choice(NONFINITE)
    d["value"] = _NUM
    return _dump(d, lit.text), _f("value"), None


def _empty_measurement(rng: random.Random, d: dict, raw: bytes) -> Out:
    if d.get("kind") != "measurement":
        return None
    d["value"] = d["text"] = None
    return _dump(d), _f("value"), None


def _available_before_time(rng: random.Random, d: dict, raw: bytes) -> Out:
    t = datetime.fromisoformat(d["time"])
    d["available_time"] = (t - timedelta(seconds=rng.choice([1, 60, 3600, 86400 * 400]))).isoformat()
    return _dump(d), _f("available_time"), None


def _missing(rng: random.Random, d: dict, raw: bytes) -> Out:
    required = {"measurement": ["item", "category"], "stay_opened": ["static"], "ecg": ["study_id", "waveform"]}
    field = rng.choice(["event_id", "stay_id", "subject_id", "time", "available_time", "source",
                        *required.get(d["kind"], [])])
    del d[field]
    return _dump(d), f" {field}: required field missing", None


def _extra(rng: random.Random, d: dict, raw: bytes) -> Out:
    name = rng.choice(["extra", "patient_name", "stayId", "Value", "_x", "mrn", "valueNum"])
    d[name] = rng.choice([1, "John Example", None, {"a": 1}, [1, 2]])
    return _dump(d), f" {name}: unknown field", None


def _extra_nested(rng: random.Random, d: dict, raw: bytes) -> Out:
    if d["kind"] == "stay_opened":
        d["static"]["name"] = "Jane Example"
        return _dump(d), " static.name: unknown field", "Jane Example"
    if d["kind"] == "ecg":
        d["waveform"]["units"] = "mV"
        return _dump(d), " waveform.units: unknown field", None
    return None


def _unknown_kind(rng: random.Random, d: dict, raw: bytes) -> Out:
    value = rng.choice(["nonsense", "Measurement", "measurement ", "", "vital", "ECG", "stay-opened", 1, None, True,
                        ["measurement"]])
    d["kind"] = value
    return _dump(d), " kind: ", _planted(value) if value not in ("measurement ", "Measurement") else None


def _missing_kind(rng: random.Random, d: dict, raw: bytes) -> Out:
    del d["kind"]
    return _dump(d), " kind: required field missing", None


def _truncate(rng: random.Random, d: dict, raw: bytes) -> Out:
    return raw[: rng.randrange(0, len(raw))], "malformed JSON", None


def _garbage(rng: random.Random, d: dict, raw: bytes) -> Out:
    pos = rng.choice([0, 1, len(raw)])
    junk = rng.choice([b"}", b" x", b"\x01", b",", b"{", b"\x00", b"'", b"//c", b"]"])
    return raw[:pos] + junk + raw[pos:], "malformed JSON", None


def _structural(rng: random.Random, d: dict, raw: bytes) -> Out:
    which = rng.randrange(5)
    if which == 0:
        return raw.replace(b'"', b"'", 1), "malformed JSON", None          # single quotes
    if which == 1:
        return raw.replace(b",", b",,", 1), "malformed JSON", None         # double comma
    if which == 2:
        return raw.replace(b":", b"=", 1), "malformed JSON", None          # wrong separator
    if which == 3:
        return raw.replace(b'":"', b'":"\x01', 1), "malformed JSON", None  # raw control character in a string
    return raw[:-1] + b",}", "malformed JSON", None                        # trailing comma


def _not_object(rng: random.Random, d: dict, raw: bytes) -> Out:
    value = rng.choice([b"null", b"[]", b"42", b'"event"', b"true", b"[" + raw + b"]", b'""', b"-0"])
    return value, "must be a JSON object", None


def _empty(rng: random.Random, d: dict, raw: bytes) -> Out:
    return rng.choice([b"", b" ", b"\n", b"\t\r\n "]), "malformed JSON", None


def _non_utf8(rng: random.Random, d: dict, raw: bytes) -> Out:
    bad = rng.choice([b"\xff", b"\xfe\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\xe2\x82", b"\xf5\x80\x80\x80",
                      b"\x80"])
    key = rng.choice([b'"source":"', b'"event_id":"', b"{"])
    pos = raw.find(key) + len(key)
    return raw[:pos] + bad + raw[pos:], "not valid UTF-8", None


def _oversize(rng: random.Random, d: dict, raw: bytes) -> Out:
    size = rng.randrange(MAX_MESSAGE_BYTES + 1, (1 << 20) + 4096)
    pad = size - len(raw)
    if pad <= 10:
        return raw + b" " * max(1, MAX_MESSAGE_BYTES + 1 - len(raw)), "larger than", None
    if rng.random() < 0.5:
        head = raw[:-1] + b',"padding":"'
        return head + b"A" * (size - len(head) - 2) + b'"}', "larger than", None
    return b" " * pad + raw, "larger than", None          # whitespace is valid JSON: only the cap rejects it


def _long_string(rng: random.Random, d: dict, raw: bytes) -> Out:
    fields = {"measurement": [("label", 257), ("unit", 65), ("text", 1025), ("item", 257), ("source_item", 257)],
              "stay_opened": [("static.first_careunit", 257), ("static.admission_type", 300)],
              "ecg": [("statements.0", 1025), ("quality.0", 4097)]}.get(d["kind"], []) + [("source", 65)]
    field, n = rng.choice(fields)
    text = "Q" * (n + rng.randrange(0, 100))
    if field.startswith("static."):
        d["static"][field[7:]] = text
    elif field.endswith(".0"):
        d[field[:-2]] = [text]
    else:
        d[field] = text
    return _dump(d), _f(field), None


def _double(rng: random.Random, d: dict, raw: bytes) -> Out:
    """Two field-level mutations at once: rejected, but which reason comes first is not specified."""
    first = rng.choice(_FIELD_LEVEL)
    out = first(rng, d, raw)
    if out is None:
        return None
    # Two waveform mutations could cancel out (n_samples + 12 and 24 more data bytes): never pair them.
    second = rng.choice([m for m in _FIELD_LEVEL if not (first in _WAVEFORM and m in _WAVEFORM)])
    try:
        out2 = second(rng, json.loads(out[0]), out[0])
    except (KeyError, TypeError, ValueError, AttributeError):  # the first made the second inapplicable
        out2 = None
    return (out2[0], None, None) if out2 is not None else out


# ---- ECG mutations ------------------------------------------------------------------------------------------


def _ecg(fn: Callable[[random.Random, dict], Out]):
    def mutate(rng: random.Random, d: dict, raw: bytes) -> Out:
        return fn(rng, d) if d.get("kind") == "ecg" else None
    mutate.__name__ = fn.__name__
    mutate.kinds = ("ecg",)
    return mutate


@_ecg
def _ecg_leads(rng: random.Random, d: dict) -> Out:
    leads = list(d["waveform"]["leads"])
    which = rng.randrange(7)
    if which == 0:
        del leads[rng.randrange(len(leads))]                       # a missing lead
    elif which == 1:
        i, j = rng.sample(range(len(leads)), 2)
        leads[i], leads[j] = leads[j], leads[i]                    # two leads swapped
    elif which == 2:
        i = rng.randrange(len(leads))
        leads[i] = leads[i].lower() if leads[i] != leads[i].lower() else leads[i].upper()
    elif which == 3:
        leads.append("V7")
    elif which == 4:
        leads = []
    elif which == 5:
        leads = list(range(12))
    else:
        leads = leads[:6]
    d["waveform"]["leads"] = leads
    return _dump(d), " waveform.leads", None


_ecg_gain = _ecg(lambda rng, d: _set("gain", [_Literal("NaN"), _Literal("Infinity"), _Literal("-Infinity"), 0, 0.0,
                                              -0.005, 1e6, 11.0, "0.005", True, None], path=("waveform",))(rng, d, b""))
_ecg_fs = _ecg(lambda rng, d: _set("fs", [0, 0.0, -500.0, 50.0, 99.9, 2001.0, 1e9, _Literal("NaN"), "500", True, None],
                                   path=("waveform",))(rng, d, b""))


@_ecg
def _ecg_n_samples(rng: random.Random, d: dict) -> Out:
    n = d["waveform"]["n_samples"]
    choice = rng.choice(["zero", "neg", "huge", "float", "str", "plus", "minus", "double", "half"])
    value = {"zero": 0, "neg": -1, "huge": 10**9, "float": float(n), "str": str(n), "plus": n + 1, "minus": n - 1,
             "double": 2 * n, "half": n // 2}[choice]
    d["waveform"]["n_samples"] = value
    # a plausible but wrong n_samples shows up as data of the wrong length
    return _dump(d), " waveform.data: " if choice in ("plus", "minus", "double", "half") else " waveform.n_samples: ", None


def _b64decode(text: str) -> bytes:
    """pydantic writes URL-safe base64 without padding (and reads either alphabet, padded or not)."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@lru_cache(maxsize=1)
def _zip_bomb() -> str:
    """64 MiB of zeros in ~64 KB of zlib: must be stopped by the bounded inflate, not decompressed."""
    d = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    parts = [d.compress(chunk) for _ in range(64)]
    return base64.b64encode(b"".join(parts) + d.flush()).decode()


@_ecg
def _ecg_data(rng: random.Random, d: dict) -> Out:
    wf = d["waveform"]
    raw = zlib.decompress(_b64decode(wf["data"]))
    choice = rng.choice(["notb64", "notzlib", "short", "long", "truncated", "trailing", "bomb", "empty", "number",
                         "gzip", "raw"])
    if choice == "notb64":
        wf["data"] = rng.choice(["!!!not base64!!!", "%%%%", "AAAA*", "\u00e9\u00e9\u00e9\u00e9"])
        rule = "must be valid base64"
    elif choice == "notzlib":
        wf["data"] = base64.b64encode(random.Random(rng.random()).randbytes(rng.randrange(1, 4096))).decode()
        rule = None
    elif choice == "short":
        wf["data"] = base64.b64encode(zlib.compress(raw[: -2 * rng.randrange(1, 100)], 1)).decode()
        rule = "inflates to fewer bytes"
    elif choice == "long":
        wf["data"] = base64.b64encode(zlib.compress(raw + bytes(2 * rng.randrange(1, 100)), 1)).decode()
        rule = "inflates to more bytes"
    elif choice == "truncated":
        comp = zlib.compress(raw, 1)
        wf["data"] = base64.b64encode(comp[: rng.randrange(1, len(comp) - 4)]).decode()
        rule = None
    elif choice == "trailing":
        wf["data"] = base64.b64encode(zlib.compress(raw, 1) + b"\x00junk").decode()
        rule = "bytes after the end"
    elif choice == "bomb":
        wf["data"] = _zip_bomb()
        rule = "inflates to more bytes"
    elif choice == "empty":
        wf["data"] = ""
        rule = "truncated zlib stream"
    elif choice == "number":
        wf["data"] = 12345
        rule = None
    elif choice == "gzip":
        import gzip
        wf["data"] = base64.b64encode(gzip.compress(raw, 1, mtime=0)).decode()
        rule = "not a valid zlib stream"
    else:
        wf["data"] = base64.b64encode(raw).decode()   # uncompressed samples
        rule = None
    return _dump(d), " waveform.data: " + (rule or ""), None


@_ecg
def _ecg_measurements(rng: random.Random, d: dict) -> Out:
    m = d["measurements"]
    choice = rng.randrange(6)
    if choice == 0:
        m[rng.choice(["qt_interval", "patient", "RR_interval", "p_axis "])] = 400.0
    elif choice == 1:
        m[rng.choice(ECG_MEASUREMENTS)] = _NUM
        return _dump(d, rng.choice(NONFINITE).text), " measurements", None
    elif choice == 2:
        m[rng.choice(ECG_MEASUREMENTS)] = rng.choice(["800", True, [1], {"v": 1}])
    elif choice == 3:
        m[rng.choice(ECG_MEASUREMENTS)] = rng.choice([1e7, -1e6, 1e300])
    elif choice == 4:
        d["measurements"] = rng.choice([[1, 2], "rr=800", 5])
        return _dump(d), " measurements: ", None
    else:
        d["measurements"] = {str(i): 1.0 for i in range(rng.randrange(1, 50))}
    return _dump(d), " measurements", None


@_ecg
def _ecg_lists(rng: random.Random, d: dict) -> Out:
    field = rng.choice(["statements", "quality"])
    d[field] = rng.choice(["Sinus rhythm", [1], [None], ["ok"] * 65, {"0": "x"}])
    return _dump(d), f" {field}", None


_ecg_study = _ecg(lambda rng, d: _set("study_id", BAD_IDS + NOT_AN_ID)(rng, d, b""))
_ecg_waveform_type = _ecg(lambda rng, d: _set("waveform", ["AAAA", [1, 2], None, 5])(rng, d, b""))
for _fn, _name in ((_ecg_gain, "ecg_gain"), (_ecg_fs, "ecg_fs"), (_ecg_study, "ecg_study_id"),
                  (_ecg_waveform_type, "ecg_waveform_type")):
    _fn.__name__ = _name


# ---- the mutation table ------------------------------------------------------------------------------------

_FIELD_LEVEL: list = [
    _set("stay_id", BAD_IDS + NOT_AN_ID), _set("subject_id", BAD_IDS + NOT_AN_ID),
    _set("hadm_id", BAD_IDS + ["12", 12.0, True], kinds=("stay_opened",)),
    _set("event_id", BAD_EVENT_IDS + [1, None, ["a"]]),
    _set("time", BAD_TIMES), _set("available_time", BAD_TIMES),
    _set("source", ["", "s" * 65, 1, None]),
    _set("value", NOT_A_NUMBER, kinds=("measurement",)),
    _set("concept", ["HR", "heart_rate", "bp", "gcs_total", "", "spo2 ", 1], kinds=("measurement",)),
    _set("category", ["Lab", "", "vitals", "waveform", 1, None], kinds=("measurement",)),
    _set("item", ["", 220045, None], kinds=("measurement",)),
    _set("age", [-1.0, 150.5, 1e9, -1e-3, "70", True, _Literal("NaN"), _Literal("Infinity")], ("stay_opened",), ("static",)),
    _set("height_cm", [0.0, 5.0, 1000.0, -170.0, 19.9, _Literal("Infinity"), "170"], ("stay_opened",), ("static",)),
    _set("weight_kg", [0.0, -70.0, 1e4, 0.1, 700.5, _Literal("NaN"), [70]], ("stay_opened",), ("static",)),
    _set("gender", ["X", "female", "f", "", 1, True], ("stay_opened",), ("static",)),
    _set("static", [None, "F/67", [1], 67], kinds=("stay_opened",)),
    _absurd_concept, _absurd_item, _absurd_unknown_item, _nonfinite_value, _empty_measurement, _available_before_time,
    _missing, _extra, _extra_nested, _unknown_kind, _missing_kind, _long_string,
    _ecg_leads, _ecg_gain, _ecg_fs, _ecg_n_samples, _ecg_data, _ecg_measurements, _ecg_lists, _ecg_study,
    _ecg_waveform_type,
]

for _fn in (_absurd_concept, _absurd_item, _absurd_unknown_item, _nonfinite_value, _empty_measurement):
    _fn.kinds = ("measurement",)
_extra_nested.kinds = ("stay_opened", "ecg")

_WAVEFORM = {_ecg_leads, _ecg_gain, _ecg_fs, _ecg_n_samples, _ecg_data, _ecg_waveform_type}

# (mutation, weight): value rules dominate; oversize payloads are rare so 10,000 messages stay small.
MUTATIONS: list[tuple[str, Callable, float]] = [
    *((m.__name__.lstrip("_"), m, 1.0) for m in _FIELD_LEVEL),
    ("absurd_concept+", _absurd_concept, 6.0), ("nonfinite+", _nonfinite_value, 2.0), ("ecg_data+", _ecg_data, 2.0),
    ("ecg_leads+", _ecg_leads, 1.0),
    ("truncate", _truncate, 2.0), ("garbage", _garbage, 1.0), ("structural", _structural, 1.0),
    ("not_object", _not_object, 0.5), ("empty", _empty, 0.3), ("non_utf8", _non_utf8, 1.5),
    ("oversize", _oversize, 0.25), ("double", _double, 1.0),
]


def _apply(base: bytes, parsed: dict, mutation: Callable, rng: random.Random) -> Out:
    return mutation(rng, copy.deepcopy(parsed), base)


def _usable(parsed: list[dict]) -> list[tuple[str, Callable, float, list[int]]]:
    """(name, mutation, weight, indices of the base events it applies to) for every mutation that applies to some.
    Each mutation draws its base among the events it applies to, so rare kinds (ECGs) are still covered."""
    by_kind: dict[str, list[int]] = {}
    for i, d in enumerate(parsed):
        by_kind.setdefault(d.get("kind"), []).append(i)
    usable = []
    for name, fn, weight in MUTATIONS:
        kinds = getattr(fn, "kinds", None)
        pool = list(range(len(parsed))) if kinds is None else [i for k in kinds for i in by_kind.get(k, [])]
        if pool:
            usable.append((name, fn, weight, pool))
    return usable


def _parsed_base(good: Sequence[bytes] | None) -> tuple[list[bytes], list[dict]]:
    base = list(good) if good is not None else list(example_messages())
    if not base:
        raise ValueError("bad messages need at least one good message to start from")
    return base, [json.loads(b) for b in base]


def bad_message_cases(n: int, seed: int, good: Sequence[bytes] | None = None) -> list[Case]:
    """n bad messages with their expected reason fragment, planted value and mutation name."""
    base, parsed = _parsed_base(good)
    usable = _usable(parsed)
    rng = random.Random(seed)
    weights = [u[2] for u in usable]
    out: list[Case] = []
    while len(out) < n:
        name, fn, _, pool = usable[rng.choices(range(len(usable)), weights)[0]]
        i = pool[rng.randrange(len(pool))]
        result = _apply(base[i], parsed[i], fn, rng)
        if result is not None:
            out.append(Case(result[0], result[1], result[2], name))
    return out


def bad_messages(n: int, seed: int, good: Sequence[bytes] | None = None) -> list[tuple[bytes, str | None]]:
    """n bad Kafka message values and, for each, a fragment its rejection reason must contain (or None)."""
    return [(c.data, c.fragment) for c in bad_message_cases(n, seed, good)]


# ---- hypothesis strategies ----------------------------------------------------------------------------------


def bad_message(good: Sequence[bytes] | None = None) -> st.SearchStrategy[Case]:
    """One bad message: a mutation (uniformly), a base event it applies to and the mutation's random choices."""
    base, parsed = _parsed_base(good)
    usable = _usable(parsed)

    @st.composite
    def case(draw) -> Case:
        name, fn, _, pool = draw(st.sampled_from(usable))
        i = draw(st.sampled_from(pool))
        rng = draw(st.randoms(use_true_random=False))
        result = _apply(base[i], parsed[i], fn, rng)
        if result is None:          # e.g. 'double' whose first mutation did not apply
            result = _apply(base[i], parsed[i], _truncate, rng)
            name = "truncate"
        return Case(result[0], result[1], result[2], name)

    return case()


def good_message(good: Sequence[bytes] | None = None) -> st.SearchStrategy[bytes]:
    return st.sampled_from(list(good) if good is not None else list(example_messages()))


def _measurement_base(good: Sequence[bytes] | None) -> dict:
    for raw in (good if good is not None else example_messages()):
        d = json.loads(raw)
        if d["kind"] == "measurement":
            return d
    return json.loads(example_messages()[1])


def absurd_measurement(good: Sequence[bytes] | None = None) -> st.SearchStrategy[tuple[bytes, str]]:
    """(message, concept): a measurement of a bedside concept with a finite value outside its range."""
    base = _measurement_base(good)

    @st.composite
    def case(draw):
        concept = draw(st.sampled_from(sorted(CONCEPT_RANGES)))
        r = CONCEPT_RANGES[concept]
        value = draw(st.floats(allow_nan=False, allow_infinity=False).filter(lambda v: v not in r))
        d = copy.deepcopy(base)
        _as_concept(d, concept)
        d["value"] = value
        return _dump(d), concept

    return case()


def possible_measurement(good: Sequence[bytes] | None = None) -> st.SearchStrategy[tuple[bytes, str]]:
    """(message, concept): a measurement of a bedside concept with a value inside its range: must pass."""
    base = _measurement_base(good)

    @st.composite
    def case(draw):
        concept = draw(st.sampled_from(sorted(CONCEPT_RANGES)))
        r = CONCEPT_RANGES[concept]
        lo, hi = draw(st.sampled_from(r.parts))
        value = draw(st.floats(lo, hi, exclude_min=r.lo_open and (lo, hi) == r.parts[0]))
        d = copy.deepcopy(base)
        _as_concept(d, concept)
        d["value"] = value
        return _dump(d), concept

    return case()

