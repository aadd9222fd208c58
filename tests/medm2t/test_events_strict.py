"""Strict ingest (issue 8): parse_event rejects every bad message with InvalidEvent, a short reason that names
the field and the rule and never the value, and accepts everything the real readers emit."""
from __future__ import annotations

import base64
import itertools
import json
import math
import tracemalloc
import zlib
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings

from medm2t.events import (
    CONCEPT_RANGES, LEADS, MAX_ID, MAX_MESSAGE_BYTES, InvalidEvent, Measurement, Waveform, dump_event, parse_event,
)
from tests.helpers.bad_messages import (
    absurd_measurement, bad_message, bad_message_cases, bad_messages, example_messages, good_message,
    possible_measurement,
)

HYPOTHESIS = settings(max_examples=150, deadline=None, database=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
GOOD = example_messages()


def _base(kind: str, concept: str | None = None) -> dict:
    for raw in GOOD:
        d = json.loads(raw)
        if d["kind"] == kind and (concept is None or d.get("concept") == concept):
            return d
    raise LookupError(kind)


def _with(kind: str, path: str, value, concept: str | None = None) -> bytes:
    """A good event of `kind` with `path` (dotted) set to `value`; a str starting with '=' is a JSON literal."""
    d = _base(kind, concept)
    *parents, last = path.split(".")
    target = d
    for p in parents:
        target = target[p]
    literal = isinstance(value, str) and value.startswith("=")
    target[last] = "__literal__" if literal else value
    raw = json.dumps(d, separators=(",", ":")).encode()
    return raw.replace(b'"__literal__"', value[1:].encode()) if literal else raw


def _rejects(raw, field: str, rule: str = "", planted: str | None = None) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw)
    exc = info.value
    assert str(exc) == exc.reason and exc.reason.startswith("invalid event"), exc.reason
    assert (f" {field}: " in exc.reason or f" {field}." in exc.reason) and rule in exc.reason, exc.reason
    assert len(exc.reason) < 300
    if planted is not None:
        assert planted not in exc.reason, exc.reason
    return exc


# ---- good events --------------------------------------------------------------------------------------------


def test_good_events_pass_and_read_back():
    kinds = Counter()
    for raw in GOOD:
        event = parse_event(raw)
        kinds[event.kind] += 1
        assert parse_event(event.model_dump_json()) == event
        assert parse_event(raw.decode()) == event              # str input
        assert parse_event(bytearray(raw)) == event
        assert parse_event(event.model_dump()) == event        # dict input (Python objects, as model_dump gives)
    assert set(kinds) == {"stay_opened", "measurement", "ecg", "stay_closed"}


def test_invalid_event_is_one_value_error_type_with_a_short_reason():
    exc = _rejects(_with("measurement", "value", 1e9, "hr"), "value", "concept hr")
    assert isinstance(exc, ValueError) and exc.field == "value" and exc.kind == "measurement"
    assert exc.rule.startswith("impossible for concept hr")


def test_readers_keep_constructing_events_in_python_without_ingest_rules():
    """Python-side construction stays lax (readers must never crash); the JSON of a bad event is rejected."""
    d = _base("measurement", "hr")
    m = Measurement(**{**d, "value": 0, "time": d["time"], "available_time": d["available_time"]})
    assert m.value == 0.0
    _rejects(dump_event(m), "value", "concept hr")


# ---- message level -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", [b"", b"{", b"\x00not json at all", b"{'a': 1}", GOOD[1][:-1], GOOD[1] + b"}",
                                 GOOD[1][:-1] + b",}"])
def test_malformed_json(raw):
    exc = _rejects(raw, "message", "malformed JSON")
    assert "json" in exc.reason.lower()  # the pipeline test looks for it


@pytest.mark.parametrize("raw", [b"null", b"[]", b"42", b'"x"', b"true"])
def test_not_an_object(raw):
    _rejects(raw, "message", "must be a JSON object")


@pytest.mark.parametrize("bad", [b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\xc0\xaf", b"\x80"])
def test_non_utf8(bad):
    raw = GOOD[1].replace(b'"source":"', b'"source":"' + bad, 1)
    _rejects(raw, "message", "not valid UTF-8")
    _rejects("\ud800" + GOOD[1].decode(), "message", "not valid UTF-8")


def test_size_cap():
    event = parse_event(GOOD[1])
    padded = GOOD[1] + b" " * (MAX_MESSAGE_BYTES - len(GOOD[1]))
    assert len(padded) == MAX_MESSAGE_BYTES and parse_event(padded) == event
    _rejects(padded + b" ", "message", f"larger than {MAX_MESSAGE_BYTES} bytes")
    _rejects(GOOD[1][:-1] + b',"label":"' + b"A" * (1 << 20) + b'"}', "message", "larger than")
    _rejects((padded + b" ").decode(), "message", "larger than")


def test_size_cap_fits_a_real_ecg():
    ecg = next(raw for raw in GOOD if b'"kind":"ecg"' in raw)
    # The example ECG compresses unusually well; incompressible 10 s 12-lead int16 samples bound any real one.
    worst = 4 * -(-(len(LEADS) * 5000 * 2 + 100) // 3)
    assert len(ecg) < MAX_MESSAGE_BYTES and worst < MAX_MESSAGE_BYTES / 3


@pytest.mark.parametrize("kind", ["nonsense", "Measurement", "", "vital", 1, None])
def test_unknown_kind(kind):
    _rejects(_with("measurement", "kind", kind), "kind", "unknown kind", planted="nonsense")


def test_missing_kind_and_fields_and_unknown_fields():
    d = _base("measurement")
    del d["kind"]
    _rejects(json.dumps(d), "kind", "required field missing")
    d = _base("measurement")
    del d["category"]
    exc = _rejects(json.dumps(d), "category", "required field missing")
    assert exc.reason.startswith("invalid event") and "category" in exc.reason  # what the pipeline test expects
    _rejects(_with("measurement", "patient_name", "Jane Example"), "patient_name", "unknown field", planted="Jane Example")
    _rejects(_with("stay_opened", "static.name", "Jane Example"), "static.name", "unknown field", planted="Jane Example")
    long_key = _with("measurement", "x" * 500, 1)
    exc = _rejects(long_key, "<key>", "unknown field")
    assert "xxxx" not in exc.reason


# ---- types ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["97", "97.5", True, False, [97], {"v": 97}, ""])
def test_value_is_never_coerced(value):
    _rejects(_with("measurement", "value", value, "hr"), "value", "must be a JSON number", planted="97.5")


def test_integers_are_floats():
    assert parse_event(_with("measurement", "value", 97, "hr")).value == 97.0


@pytest.mark.parametrize("field", ["stay_id", "subject_id"])
@pytest.mark.parametrize("value", ["12", 12.0, 1.5, True, None, [1]])
def test_ids_are_integers(field, value):
    _rejects(_with("measurement", field, value), field, "must be an integer")


@pytest.mark.parametrize("field", ["stay_id", "subject_id"])
@pytest.mark.parametrize("value", [-1, 0, MAX_ID + 1, 2**63, -(2**63), 10**30])
def test_ids_in_range(field, value):
    _rejects(_with("measurement", field, value), field, "[1, 2**53 - 1]", planted=str(value) if value > 9 else None)
    assert parse_event(_with("measurement", field, MAX_ID)).model_dump()[field] == MAX_ID


def test_hadm_and_study_ids():
    for value in (0, -1, 2**63, "12", True):
        _rejects(_with("stay_opened", "hadm_id", value), "hadm_id")
        _rejects(_with("ecg", "study_id", value), "study_id")
    assert parse_event(_with("stay_opened", "hadm_id", None)).hadm_id is None


@pytest.mark.parametrize("value", ["", "a" * 129, "has space", "tab\there", "line\nbreak", "\x00x", "ééé", 1, None])
def test_event_id(value):
    _rejects(_with("measurement", "event_id", value), "event_id", planted="has space")


def test_event_id_limits():
    assert parse_event(_with("measurement", "event_id", "a" * 128)).event_id == "a" * 128
    assert parse_event(_with("measurement", "event_id", "mimic-iv|row:12/x")).event_id == "mimic-iv|row:12/x"


# ---- times ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["time", "available_time"])
@pytest.mark.parametrize("value, rule", [
    (12345, "not a number"), (1.7e9, "not a number"), (True, "not a number"),
    ("2150-03-04T05:06:07Z", "naive"), ("2150-03-04T05:06:07+02:00", "naive"), ("2150-03-04 05:06:07-0500", "naive"),
    ("0001-01-01T00:00:00", "year outside 1900-2300"), ("9999-12-31T23:59:59", "year outside 1900-2300"),
    ("1899-12-31T23:59:59", "year outside"), ("2301-01-01T00:00:00", "year outside"),
    ("12345", "ISO 8601"), ("2150-03-04", "ISO 8601"), ("yesterday", "ISO 8601"), ("", "ISO 8601"),
    ("2150-02-30T00:00:00", "valid ISO 8601"), ("2150-13-01T00:00:00", "valid ISO 8601"),
    ("２１５０-03-04T05:06:07", "ISO 8601"), (None, "ISO 8601"), ([2150, 3, 4], "ISO 8601"),
])
def test_clinical_times(field, value, rule):
    d = _base("stay_closed")
    other = "available_time" if field == "time" else "time"
    d[field] = value
    d[other] = "2150-03-06T05:06:07" if field == "time" else "1900-01-01T00:00:00"
    _rejects(json.dumps(d), field, rule, planted=value if isinstance(value, str) and len(value) > 3 else None)


@pytest.mark.parametrize("value", ["1900-01-01T00:00:00", "2300-12-31T23:59:59.999999", "2150-03-04 05:06",
                                   "2150-03-04T05:06:07.5"])
def test_clinical_times_accepted(value):
    d = _base("stay_closed")
    d["time"] = d["available_time"] = value
    assert parse_event(json.dumps(d)).time.tzinfo is None


def test_available_time_not_before_time():
    d = _base("measurement")
    d["available_time"] = "2150-03-04T05:00:00"
    d["time"] = "2150-03-04T05:00:01"
    _rejects(json.dumps(d), "available_time", "must not be before time")


# ---- values --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("concept, value", [
    ("hr", 1e9), ("hr", -5), ("hr", 0), ("hr", 401), ("spo2", 500), ("spo2", -1), ("temp", -273), ("temp", 1e100),
    ("temp", 98.6), ("fio2", 1e6), ("fio2", 0), ("fio2", 5), ("fio2", 0.2), ("fio2", 100.5), ("sbp", -1), ("sbp", 500),
    ("dbp", 301), ("map", -10), ("rr", 201), ("gcs_eye", 5), ("gcs_verbal", 0), ("gcs_motor", 7), ("gcs", 2),
    ("gcs", 16),
])
def test_impossible_values_per_concept(concept, value):
    d = _base("measurement", concept if concept != "gcs" else "gcs")
    d["value"] = value
    _rejects(json.dumps(d), "value", f"impossible for concept {concept}",
             planted=json.dumps(value) if len(json.dumps(value)) > 3 else None)


@pytest.mark.parametrize("concept, value", [
    ("hr", 0.5), ("hr", 400), ("fio2", 0.21), ("fio2", 0.5), ("fio2", 1.0), ("fio2", 21), ("fio2", 100), ("spo2", 0),
    ("spo2", 100), ("temp", 10), ("temp", 50), ("sbp", 0), ("rr", 0), ("gcs", 3), ("gcs", 15), ("gcs_eye", 1),
])
def test_possible_values_per_concept(concept, value):
    d = _base("measurement", concept)
    d["value"] = value
    assert parse_event(json.dumps(d)).value == value


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400", "-1e999"])
def test_non_finite_values(literal):
    _rejects(_with("measurement", "value", "=" + literal, "hr"), "value", "must be finite")
    _rejects(_with("measurement", "value", "=" + literal), "value", "must be finite")


def test_catalogue_item_ranges_and_unknown_items():
    d = next(json.loads(r) for r in GOOD if b'"item":"50971"' in r)  # potassium, valid (0, 30)
    for value in (31, -4, 4100):
        _rejects(json.dumps({**d, "value": value}), "value", "impossible for item 50971", planted="4100")
    unknown = next(json.loads(r) for r in GOOD if b"LAB//99999" in r)
    assert parse_event(json.dumps({**unknown, "value": -1e8})).value == -1e8
    for value in (1e10, -1e10, 1e300):
        _rejects(json.dumps({**unknown, "value": value}), "value", "without a known range")


def test_concept_category_and_empty_measurements():
    for concept in ("HR", "heart_rate", "", 1):
        _rejects(_with("measurement", "concept", concept, "hr"), "concept", planted="heart_rate")
    _rejects(_with("measurement", "category", "Lab"), "category", "'lab' or 'vital'")
    d = _base("measurement")
    _rejects(json.dumps({**d, "value": None, "text": None}), "value", "a value or a text")
    cat = next(json.loads(r) for r in GOOD if b'"NEG"' in r)
    assert parse_event(json.dumps(cat)).text == "NEG"
    _rejects(json.dumps({**cat, "text": "N" * 2000}), "text", "0-1024 characters")
    _rejects(json.dumps({**cat, "item": ""}), "item", "1-256 characters")


# ---- static features -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field, value", [
    ("age", -1), ("age", 150.5), ("age", 1e9), ("age", "=NaN"), ("age", "70"), ("age", True), ("height_cm", 5000),
    ("height_cm", 0), ("height_cm", "=Infinity"), ("weight_kg", 0), ("weight_kg", -70), ("weight_kg", 1e4),
    ("weight_kg", "=NaN"), ("gender", "X"), ("gender", "female"),
])
def test_static_features(field, value):
    _rejects(_with("stay_opened", f"static.{field}", value), f"static.{field}", planted="female")


def test_static_features_accepted():
    for field, value in (("age", 0), ("age", 91.5), ("height_cm", 121.9), ("weight_kg", 472.0), ("age", None)):
        parse_event(_with("stay_opened", f"static.{field}", value))


# ---- ECG -----------------------------------------------------------------------------------------------------


def _ecg_with_data(payload: bytes, n_samples: int | None = None) -> bytes:
    d = _base("ecg")
    d["waveform"]["data"] = base64.b64encode(payload).decode()
    if n_samples is not None:
        d["waveform"]["n_samples"] = n_samples
    return json.dumps(d).encode()


def test_ecg_leads():
    leads = list(LEADS)
    for bad in (leads[:-1], leads[1:] + leads[:1], [x.lower() for x in leads], leads + ["V7"], [], ["I", "II", "III"]):
        _rejects(_with("ecg", "waveform.leads", bad), "waveform.leads", "exactly the 12 standard leads")
    _rejects(_with("ecg", "waveform.leads", list(range(12))), "waveform.leads.0", "must be a string")


@pytest.mark.parametrize("field, value, rule", [
    ("gain", "=NaN", "finite"), ("gain", "=Infinity", "finite"), ("gain", 0, "(0, 10]"), ("gain", -0.005, "(0, 10]"),
    ("gain", 11, "(0, 10]"), ("gain", "0.005", "number"), ("fs", 0, "[100, 2000]"), ("fs", 99, "[100, 2000]"),
    ("fs", 2001, "[100, 2000]"), ("fs", "=NaN", "finite"), ("n_samples", 0, "[1, 60 s x fs]"),
    ("n_samples", 10**9, "[1, 60 s x fs]"), ("n_samples", 5000.0, "integer"),
])
def test_ecg_waveform_fields(field, value, rule):
    _rejects(_with("ecg", f"waveform.{field}", value), f"waveform.{field}", rule)


def test_ecg_n_samples_limit_scales_with_fs():
    d = _base("ecg")
    d["waveform"].update(fs=100.0, n_samples=6001)                  # 60.01 s at 100 Hz
    _rejects(json.dumps(d), "waveform.n_samples", "60 s x fs")


def test_ecg_data_must_inflate_to_exactly_the_samples():
    d = _base("ecg")
    n = d["waveform"]["n_samples"]
    raw = Waveform.model_validate_json(json.dumps(d["waveform"])).to_array()
    samples = zlib.decompress(parse_event(json.dumps(d)).waveform.data)
    assert len(samples) == 2 * 12 * n and raw.shape == (12, n)
    _rejects(_with("ecg", "waveform.data", "!!!not base64!!!"), "waveform.data", "must be valid base64")
    _rejects(_ecg_with_data(b"definitely not zlib"), "waveform.data", "not a valid zlib stream")
    _rejects(_ecg_with_data(samples), "waveform.data", "not a valid zlib stream")
    _rejects(_ecg_with_data(zlib.compress(samples[:-2])), "waveform.data", "inflates to fewer bytes")
    _rejects(_ecg_with_data(zlib.compress(samples + b"\0\0")), "waveform.data", "inflates to more bytes")
    _rejects(_ecg_with_data(zlib.compress(samples)[:-10]), "waveform.data", "truncated zlib stream")
    _rejects(_ecg_with_data(zlib.compress(samples) + b"junk"), "waveform.data", "after the end of the zlib stream")
    _rejects(_ecg_with_data(b""), "waveform.data", "truncated")
    _rejects(_ecg_with_data(zlib.compress(samples), n_samples=n + 1), "waveform.data", "inflates to fewer bytes")
    assert parse_event(_ecg_with_data(zlib.compress(samples, 9))).waveform.n_samples == n


def _bomb() -> bytes:
    c = zlib.compressobj(9)
    return b"".join(c.compress(bytes(1 << 20)) for _ in range(256)) + c.flush()   # 256 MiB of zeros


def test_zip_bomb_is_stopped_at_the_expected_size():
    bomb = _bomb()
    assert len(bomb) < MAX_MESSAGE_BYTES
    tracemalloc.start()
    try:
        _rejects(_ecg_with_data(bomb), "waveform.data", "inflates to more bytes")
        wf = Waveform(fs=500.0, leads=LEADS, n_samples=5000, gain=0.005, data=bomb)   # Python side: no checks
        with pytest.raises(ValueError, match="waveform data"):
            wf.to_array()                                                           # but reading it is bounded
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, peak


def test_ecg_machine_measurements_statements_quality():
    for bad in ({"qt_interval": 400.0}, {"rr_interval": "800"}, {"rr_interval": True}, {"rr_interval": 1e7},
                [1, 2]):
        _rejects(_with("ecg", "measurements", bad), "measurements")
    for literal in ("NaN", "Infinity"):
        d = _base("ecg")
        d["measurements"]["rr_interval"] = "__x__"
        _rejects(json.dumps(d).replace('"__x__"', literal), "measurements", "finite")
    assert parse_event(_with("ecg", "measurements", {"rr_interval": None, "p_axis": -180})).measurements["p_axis"] == -180
    _rejects(_with("ecg", "statements", "Sinus rhythm"), "statements", "must be an array", planted="Sinus rhythm")
    _rejects(_with("ecg", "statements", ["ok"] * 65), "statements", "too many items")
    _rejects(_with("ecg", "quality", [1]), "quality.0", "must be a string")


def test_dict_input_is_strict_too():
    d = parse_event(GOOD[1]).model_dump()
    with pytest.raises(InvalidEvent, match="stay_id: must be an integer"):
        parse_event({**d, "stay_id": "12"})
    with pytest.raises(InvalidEvent, match="value: must be a JSON number"):
        parse_event({**d, "value": True})
    with pytest.raises(InvalidEvent, match="impossible for concept"):
        parse_event({**d, "value": 1e9})
    with pytest.raises(InvalidEvent, match="must be JSON bytes"):
        parse_event(12)


# ---- generated bad messages ----------------------------------------------------------------------------------


def _check_rejected(data: bytes, fragment: str | None, planted: str | None) -> str:
    with pytest.raises(InvalidEvent) as info:
        parse_event(data)
    reason = info.value.reason
    assert reason.startswith("invalid event") and len(reason) < 400, reason
    if fragment is not None:
        assert fragment in reason, (fragment, reason)
    if planted is not None:
        assert planted not in reason, (planted, reason)
    return reason


def test_bad_messages_are_deterministic_and_all_rejected():
    cases = bad_message_cases(3000, seed=11)
    assert cases == bad_message_cases(3000, seed=11) and cases != bad_message_cases(3000, seed=12)
    assert [(c.data, c.fragment) for c in cases[:100]] == bad_messages(100, 11)
    mutations = Counter(c.mutation for c in cases)
    assert len(mutations) >= 45, mutations
    secrets = [v for raw in GOOD for v in _strings(json.loads(raw)) if len(v) >= 6]
    for c in cases:
        reason = _check_rejected(c.data, c.fragment, c.planted)
        assert not any(s in reason for s in secrets), reason


def _strings(d) -> list[str]:
    if isinstance(d, dict):
        return [s for k, v in d.items() if k not in ("kind", "category", "concept", "item", "source_item", "unit")
                for s in _strings(v)]
    if isinstance(d, list):
        return [s for v in d for s in _strings(v)]
    return [d] if isinstance(d, str) else []


def test_bad_messages_from_a_synthetic_cohort(synth_cohort):
    from replay.sources import parse_spec

    good = [dump_event(e) for events in itertools.islice(parse_spec(f"synth:{synth_cohort}").stays(), 4)
            for e in events if e.kind != "outcome"]
    assert any(b'"kind":"ecg"' in g for g in good)
    cases = bad_message_cases(2000, seed=5, good=good)
    assert {"ecg_data", "absurd_concept", "set_static.age", "truncate"} <= {c.mutation for c in cases}
    for c in cases:
        _check_rejected(c.data, c.fragment, c.planted)


@HYPOTHESIS
@given(bad_message())
def test_every_generated_bad_message_is_rejected(case):
    _check_rejected(case.data, case.fragment, case.planted)


@HYPOTHESIS
@given(good_message())
def test_every_good_message_passes(raw):
    event = parse_event(raw)
    assert parse_event(event.model_dump_json()) == event


@HYPOTHESIS
@given(absurd_measurement())
def test_every_absurd_value_is_rejected(case):
    raw, concept = case
    exc = _rejects(raw, "value", f"impossible for concept {concept}")
    value = json.loads(raw)["value"]
    assert repr(value) not in exc.reason or len(repr(value)) < 4


@HYPOTHESIS
@given(possible_measurement())
def test_every_possible_value_passes(case):
    raw, concept = case
    event = parse_event(raw)
    assert event.concept == concept and event.value in CONCEPT_RANGES[concept] and math.isfinite(event.value)
    assert parse_event(event.model_dump_json()) == event


# ---- what the real readers emit ------------------------------------------------------------------------------

# Rows the readers emit but ingest rejects (each reader's own `valid` ranges allow them): heart rate 0 (PhysioNet
# 2012 set-a 11, set-b 21, MIMIC-IV demo MEDS 3) and FiO2 outside 0.21-1 / 21-100 (MEDS demo: 0 once, 4 twice).
def _known_reader_rejection(event, exc: InvalidEvent) -> bool:
    if event.kind != "measurement" or exc.field != "value":
        return False
    return (event.concept == "hr" and event.value == 0) or (event.concept == "fio2" and event.value not in
                                                             CONCEPT_RANGES["fio2"])


def _round_trip(reader, limit: int | None = None, check_dump_every: int = 1) -> tuple[int, Counter]:
    n, known = 0, Counter()
    for events in itertools.islice(reader.stays(), limit):
        for e in events:
            n += 1
            try:
                back = parse_event(dump_event(e))
            except InvalidEvent as exc:
                assert _known_reader_rejection(e, exc), (exc.reason, e)
                known[(e.concept, e.value)] += 1
                continue
            if n % check_dump_every == 0:
                assert parse_event(back.model_dump_json()) == back
    return n, known


def test_synthetic_cohort_passes_strict_validation(synth_cohort):
    from replay.sources import parse_spec

    reader = parse_spec(f"synth:{synth_cohort}")
    n, known = _round_trip(reader)
    assert n > 5000 and not known


def test_mimic_iv_demo_passes_strict_validation(shared_data):
    from replay.mimic import MimicReader

    n, known = _round_trip(MimicReader(shared_data / "mimic-iv-demo-2.2"))
    assert n > 20_000 and not known


def test_physionet2012_passes_strict_validation(shared_data):
    from replay.physionet2012 import PhysioNet2012Reader

    n, known = _round_trip(PhysioNet2012Reader(shared_data / "challenge-2012" / "set-a.tar.gz"), limit=400,
                           check_dump_every=7)
    assert n > 100_000 and set(known) <= {("hr", 0.0)}


def test_meds_demo_passes_strict_validation_but_for_known_rows(shared_data):
    from replay.meds import MedsReader

    reader = MedsReader(shared_data / "mimic-iv-demo-meds" / "mimic_iv_demo_meds_events.parquet")
    n, known = _round_trip(reader, check_dump_every=13)
    assert n > 300_000 and known == Counter({("hr", 0.0): 3, ("fio2", 4.0): 2, ("fio2", 0.0): 1})
