"""MedM2T's top drivers (model/explain.py): exact for the wide head, the rest is the deep network's share,
and they read as clinical words in the score and in the alert reason."""
from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from medm2t.events import Measurement, StayOpened
from model.explain import FREQUENCY
from tests.helpers.paths import ROOT

DEMO = ROOT / "model" / "checkpoints" / "demo"
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def scorer():
    from stream.scorers.medm2t import MedM2TScorer

    return MedM2TScorer.load(DEMO, "cpu")


@pytest.fixture(scope="module")
def stays(synth_cohort):
    from replay.sources import parse_spec

    return list(parse_spec(f"synth:{synth_cohort}").stays())[:8]


def _states_at(scorer, stays, hours: float):
    inc, states, ats = scorer.incremental, [], []
    for stay in stays:
        at = stay[0].time + timedelta(hours=hours)
        state = inc.new_state()
        inc.update(state, [e for e in stay if e.available_time <= at])
        states.append(state)
        ats.append(at)
    return states, ats


def test_contributions_add_up_to_the_score(scorer, stays):
    """Reference term + every input's contribution = the wide term; wide + deep = the calibrated logit."""
    ex = scorer.explainer
    states, ats = _states_at(scorer, stays, 20)
    out = scorer.incremental.score(states, ats)
    why = ex.attribute(scorer.incremental.wide_inputs(states), out["mortality"])
    assert why.log_odds.shape == (len(states), len(why.inputs))
    assert np.allclose(why.log_odds.sum(1) + ex.reference_term(), why.wide, atol=1e-4)
    temperature = scorer.predictor.calibration.temperature("mortality") if scorer.predictor.calibration else 1.0
    assert np.allclose(why.wide + why.deep, out["mortality"].numpy() / temperature, atol=1e-4)
    # The wide head carries the signal (issue 10): its term is not a constant.
    assert why.wide.std() > 0.1


def test_only_the_changed_input_moves(scorer, stays):
    """A stay with one lab value raised differs from its original only in that lab's contribution."""
    stay = next(s for s in stays if any(isinstance(e, Measurement) and e.category == "lab" and e.value for e in s))
    at = stay[0].time + timedelta(hours=30)
    seen = [e for e in stay if e.available_time <= at]
    lab = next(e for e in reversed(seen) if isinstance(e, Measurement) and e.category == "lab" and e.value
               and e.item in scorer.predictor.featurizer.items)
    raised = [e.model_copy(update={"value": e.value * 10}) if e is lab else e for e in seen]
    inc = scorer.incremental
    states = [inc.new_state(), inc.new_state()]
    inc.update(states[0], seen)
    inc.update(states[1], raised)
    why = scorer.explainer.attribute(inc.wide_inputs(states), inc.score(states, [at, at])["mortality"])
    moved = {why.inputs[k] for k in np.flatnonzero(np.abs(why.log_odds[0] - why.log_odds[1]) > 1e-6)}
    assert moved == {f"item:{lab.item}"}  # and not FREQUENCY: the count is the same


def test_a_stay_without_measurements_has_no_item_contributions(scorer, stays):
    states, ats = _states_at(scorer, stays[:2], 0)  # only the StayOpened is available at admission
    out = scorer.incremental.score(states, ats)
    why = scorer.explainer.attribute(scorer.incremental.wide_inputs(states), out["mortality"])
    items = [k for k, name in enumerate(why.inputs) if name.startswith("item:") or name == FREQUENCY]
    assert np.abs(why.log_odds[:, items]).max() == 0.0


def _view(stay):
    from medm2t.events import Ecg
    from stream.scoring import StayView

    return StayView(stay[0].stay_id, stay[0].subject_id, stay[-1].available_time,
                    next((e for e in stay if isinstance(e, StayOpened)), None),
                    [e for e in stay if isinstance(e, Measurement)], [e for e in stay if isinstance(e, Ecg)])


def test_scores_and_alert_reasons_carry_the_drivers_in_clinical_words(scorer, stays):
    from medm2t.fhir import risk_assessment
    from stream.alerts import AlertRules

    scores = scorer.score_batch([_view(s) for s in stays])
    for score in scores:
        detail = score.tasks["mortality"].detail
        assert isinstance(detail["deep_log_odds"], float)
        drivers = detail["drivers"].split("; ")
        assert 1 <= len(drivers) <= 3
        for words in drivers:
            assert words.endswith(")") and ("(+" in words or "(-" in words), words
            assert "item:" not in words and "static:" not in words and "None" not in words, words
    first = scores[0].tasks["mortality"]
    published = scores[0].model_copy(update={"score_id": "s1"})  # the pipeline gives each score its id
    assert any(first.detail["drivers"] in n.text for n in risk_assessment(published).note)
    reason = AlertRules().rule("medm2t", "mortality").describe(scores[0], first.value)
    assert reason.endswith(f"; drivers: {first.detail['drivers']}")


def test_driver_words():
    from stream.scorers.medm2t import MedM2TState, _driver_words
    from stream.scoring import StayPoint

    t = datetime(2150, 1, 1)
    lab = dict(stay_id=1, subject_id=1, source="test", item="50813", label="Lactate", category="lab", unit="mmol/L",
               available_time=t)
    state = MedM2TState(encoder=None)
    state.recent["50813"] = [Measurement(event_id="a", time=t, value=2.0, **lab),
                             Measurement(event_id="b", time=t + timedelta(hours=2), value=4.1, **lab)]
    point = StayPoint(1, 1, t, None, 12)
    assert _driver_words("item:50813", state, point) == "Lactate 4.1 mmol/L, rising"
    state.recent["50813"][0] = state.recent["50813"][0].model_copy(update={"value": 4.0})
    assert _driver_words("item:50813", state, point) == "Lactate 4.1 mmol/L, steady"
    assert _driver_words("static:age", state, point) == "age unknown"
    assert "12 measurements" in _driver_words(FREQUENCY, state, point)
