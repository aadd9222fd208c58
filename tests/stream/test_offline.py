"""stream/offline.py's comparison of two score streams (the contract tests and `bench stream --verify` use it)."""
from __future__ import annotations

from datetime import datetime, timedelta

from medm2t.events import RiskScore, TaskScore
from stream.offline import score_differences, score_key

T0 = datetime(2150, 1, 1, 8)


def _score(hour: int, value: float, inputs: int = 5, kind: str = "probability") -> RiskScore:
    return RiskScore(stay_id=7, subject_id=70, scorer="medm2t", model_version="m", scored_at=T0 + timedelta(hours=hour),
                     inputs_seen=inputs, tasks={"task": TaskScore(value=value, kind=kind, calibration="calibrated")})


def _stream(*scores: RiskScore) -> dict:
    return {score_key(s): s for s in scores}


def test_equal_streams_and_rounding_within_the_tolerance_agree():
    assert score_differences(_stream(_score(1, 0.1), _score(2, 0.2)), _stream(_score(1, 0.1), _score(2, 0.2))) == []
    assert score_differences(_stream(_score(1, 0.1002)), _stream(_score(1, 0.1)), steps=2) == []
    # each kind within its own published rounding: days keep 3 digits, probabilities 4, rule points all
    assert score_differences(_stream(_score(1, 1.296, kind="days")), _stream(_score(1, 1.295, kind="days")), steps=2) == []
    assert score_differences(_stream(_score(1, 0.1003)), _stream(_score(1, 0.1)), steps=2) != []
    assert score_differences(_stream(_score(1, 5.0, kind="points")), _stream(_score(1, 5.0001, kind="points")),
                             steps=2) != []


def test_missing_extra_other_values_and_other_inputs_are_each_reported():
    want = _stream(_score(1, 0.1), _score(2, 0.2), _score(3, 0.3))
    got = _stream(_score(1, 0.15), _score(2, 0.2, inputs=6), _score(4, 0.4))
    problems = score_differences(got, want, steps=2)
    assert any("1 points never scored" in p for p in problems)
    assert any("1 points scored that the other stream does not have" in p for p in problems)
    assert any("0.15" in p for p in problems) and any("6 inputs" in p for p in problems)
    assert len(problems) == 4
