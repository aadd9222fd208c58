from datetime import datetime

import numpy as np
import pytest
from medm2t.events import (
    LEADS, Ecg, InvalidEvent, Measurement, StaticFeatures, StayOpened, Waveform, dump_event, make_event_id,
    parse_event,
)

T0 = datetime(2150, 1, 1, 8, 0)


def test_event_id_is_deterministic_and_row_specific():
    assert make_event_id("mimic-iv", "chartevents", 1, 220045) == make_event_id("mimic-iv", "chartevents", 1, 220045)
    assert make_event_id("mimic-iv", "chartevents", 1, 220045) != make_event_id("mimic-iv", "chartevents", 2, 220045)


def test_measurement_round_trips_through_json():
    m = Measurement(event_id="x", stay_id=1, subject_id=2, time=T0, available_time=T0, source="test",
                    item="220045", label="Heart Rate", category="vital", concept="hr", value=88.0, unit="bpm")
    assert parse_event(dump_event(m)) == m


def test_ecg_waveform_round_trips_within_quantisation():
    rng = np.random.default_rng(0)
    sig = rng.normal(0, 0.5, size=(12, 5000)).astype(np.float32)
    wf = Waveform.from_array(sig, fs=500)
    ecg = Ecg(event_id="e", stay_id=1, subject_id=2, time=T0, available_time=T0, source="test", study_id=9,
              waveform=wf, measurements={"rr_interval": 800.0, "p_axis": None}, statements=("Sinus rhythm",))
    back = parse_event(dump_event(ecg))
    assert back.waveform.leads == LEADS
    assert np.max(np.abs(back.waveform.to_array() - sig)) <= wf.gain / 2 + 1e-6
    assert len(wf.data) < sig.size * 2  # compressed int16 is smaller than raw int16


def test_malformed_event_is_rejected_with_a_reason():
    with pytest.raises(InvalidEvent, match="stay_id"):
        parse_event(b'{"kind": "measurement", "event_id": "x"}')
    with pytest.raises(InvalidEvent, match="kind"):
        parse_event(b'{"kind": "nonsense"}')
    with pytest.raises(ValueError):  # InvalidEvent is a ValueError: callers need catch only that
        parse_event(b'{"kind": "nonsense"}')


def test_stay_opened_requires_static_block():
    s = StayOpened(event_id="o", stay_id=1, subject_id=2, time=T0, available_time=T0, source="t",
                   static=StaticFeatures(gender="F", age=70))
    assert parse_event(s.model_dump()).static.age == 70
