"""NEWS2 thresholds at their RCP 2017 boundaries, and the scorer's handling of missing and stale inputs."""
from datetime import datetime, timedelta

import pytest

from medm2t.events import Measurement, StaticFeatures, StayOpened, make_event_id
from stream.scorers import news2
from stream.scoring import Scorer, StayView

T0 = datetime(2150, 1, 1, 8, 0)


@pytest.mark.parametrize("value,points", [(8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3)])
def test_respiration_rate(value, points):
    assert news2.rr_points(value) == points


@pytest.mark.parametrize("value,points", [(91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)])
def test_spo2_scale_1(value, points):
    assert news2.spo2_points(value) == points


@pytest.mark.parametrize("value,points", [(90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)])
def test_systolic_bp(value, points):
    assert news2.sbp_points(value) == points


@pytest.mark.parametrize("value,points", [(40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2),
                                          (130, 2), (131, 3)])
def test_pulse(value, points):
    assert news2.hr_points(value) == points


@pytest.mark.parametrize("value,points", [(35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1), (39.0, 1),
                                          (39.1, 2)])
def test_temperature(value, points):
    assert news2.temp_points(value) == points


@pytest.mark.parametrize("concept,score,step", [("rr", news2.rr_points, 1), ("spo2", news2.spo2_points, 1),
                                                ("sbp", news2.sbp_points, 1), ("hr", news2.hr_points, 1),
                                                ("temp", news2.temp_points, 0.1)])
def test_the_normal_ranges_the_dashboard_shades_are_the_zero_point_bands(concept, score, step):
    low, high = news2.NORMAL_RANGES[concept]
    assert score(low) == 0 and score(high) == 0 and score(round(low - step, 1)) > 0
    assert concept == "spo2" or score(round(high + step, 1)) > 0   # SpO2 has no upper band: the range ends at 100 %


def test_chart_values_round_half_up_not_to_even():
    assert news2.sbp_points(90.5) == 2  # 91 mmHg, not banker's-rounded 90
    assert news2.temp_points(36.05) == 0  # 36.1 °C


@pytest.mark.parametrize("fio2,points", [(21, 0), (0.21, 0), (21.5, 2), (0.3, 2), (40, 2), (1.0, 2)])
def test_oxygen_percent_or_fraction(fio2, points):
    assert news2.oxygen_points(fio2) == points


@pytest.mark.parametrize("gcs,points", [(15, 0), (14, 3), (3, 3)])
def test_consciousness_from_gcs(gcs, points):
    assert news2.consciousness_points(gcs) == points


def _m(concept, value, minutes, avail_delay=5):
    t = T0 + timedelta(minutes=minutes)
    return Measurement(event_id=make_event_id("t", concept, minutes, value), stay_id=1, subject_id=2, time=t,
                       available_time=t + timedelta(minutes=avail_delay), source="test", item=concept,
                       category="vital", concept=concept, value=value)


def _view(measurements, now=None):
    opened = StayOpened(event_id="o", stay_id=1, subject_id=2, time=T0, available_time=T0, source="test",
                        static=StaticFeatures())
    now = now or max(m.available_time for m in measurements)
    return StayView(stay_id=1, subject_id=2, now=now, opened=opened, measurements=list(measurements))


NORMAL = [("rr", 16), ("spo2", 97), ("fio2", 21), ("sbp", 120), ("hr", 70), ("gcs", 15), ("temp", 37.0)]


def test_scorer_satisfies_the_protocol():
    assert isinstance(news2.News2Scorer(), Scorer)


def test_normal_vitals_score_zero_and_complete():
    score = news2.News2Scorer().score_batch([_view([_m(c, v, 0) for c, v in NORMAL])])[0]
    task = score.tasks["news2"]
    assert (task.value, task.band, task.kind, score.missing) == (0, "low", "points", ())
    assert task.calibration == news2.CALIBRATION
    assert score.hours_since_admission == pytest.approx(5 / 60, abs=1e-3)


def test_aggregate_bands_and_single_parameter_three():
    # rr 25 (3) alone: low aggregate but a 3 in one parameter
    vitals = dict(NORMAL, rr=25)
    s = news2.score_view(_view([_m(c, v, 0) for c, v in vitals.items()]))
    assert (s.tasks["news2"].value, s.tasks["news2"].band) == (3, "low-medium")
    # rr 22 (2) + hr 115 (2) + temp 38.5 (1) = 5: medium
    vitals = dict(NORMAL, rr=22, hr=115, temp=38.5)
    s = news2.score_view(_view([_m(c, v, 0) for c, v in vitals.items()]))
    assert (s.tasks["news2"].value, s.tasks["news2"].band) == (5, "medium")
    # + oxygen (2) = 7: high
    vitals["fio2"] = 0.4
    s = news2.score_view(_view([_m(c, v, 0) for c, v in vitals.items()]))
    assert (s.tasks["news2"].value, s.tasks["news2"].band) == (7, "high")


def test_latest_value_wins_and_mimic_gcs_components_are_summed():
    ms = [_m(c, v, 0) for c, v in NORMAL if c != "gcs"]
    ms += [_m("hr", 135, 30), _m("gcs_eye", 4, 30), _m("gcs_verbal", 4, 30), _m("gcs_motor", 6, 30)]
    s = news2.score_view(_view(ms))
    assert s.tasks["news2"].detail["hr_points"] == 3
    assert s.tasks["news2"].detail["consciousness_points"] == 3  # 4+4+6 = 14 < 15
    assert s.missing == ()


def test_missing_and_stale_parameters_are_flagged_never_normal():
    ms = [_m("hr", 70, 0), _m("rr", 16, 0), _m("spo2", 97, 25 * 60)]  # hr, rr are > 24 h old at `now`
    s = news2.score_view(_view(ms))
    assert set(s.missing) == {"rr", "oxygen", "sbp", "hr", "consciousness", "temp"}
    assert s.tasks["news2"].detail["hr_points"] is None
    assert s.tasks["news2"].detail["complete"].startswith("no")


def test_values_not_yet_available_are_not_used():
    ms = [_m("hr", 70, 0), _m("hr", 140, 10)]
    s = news2.score_view(_view(ms, now=T0 + timedelta(minutes=8)))  # the 140 was charted later than `now`
    assert s.tasks["news2"].detail["hr_points"] == 0


# ---- NEWS2 alerts: band crossings with hysteresis ----------------------------------------------------------

from stream.alerts import AlertRules, RuleState, step  # noqa: E402
from stream.policy import DEFAULT_POLICY, AlertPolicy  # noqa: E402

RULES = AlertRules()


def _scored(aggregate: int, minutes: int, max_single: int = 0):
    from medm2t.events import RiskScore, TaskScore

    task = TaskScore(value=aggregate, kind="points", band="x", calibration=news2.CALIBRATION,
                     detail={"max_single": max_single, "rr_points": max_single})
    return RiskScore(stay_id=1, subject_id=2, scorer="news2", model_version=news2.VERSION,
                     scored_at=T0 + timedelta(minutes=minutes), tasks={"news2": task})


NO_ESCALATION = AlertPolicy(escalate_after_min=30 * 24 * 60)  # the hysteresis tests below leave acks aside


def _run(values, rule=RULES.rule("news2", "news2"), every_minutes=30, life=NO_ESCALATION):
    state, alerts = RuleState(), []
    for i, v in enumerate(values):
        state, alert = step(rule, RuleState.loads(state.dumps()), _scored(v, i * every_minutes, max_single=v), life)
        alerts.append(None if alert is None else (alert.state, alert.level))
    return alerts


def test_aggregate_raises_escalates_and_clears():
    got = [a for a in _run([2, 5, 6, 7, 6, 5, 5, 5, 2, 2, 2]) if a]
    assert got == [("raised", "urgent"), ("level-rose", "emergency"), ("de-escalated", "urgent"), ("cleared", "urgent")]
    assert [a for a in _run([7, 2, 2, 2]) if a] == [("raised", "emergency"), ("cleared", "emergency")]


def test_a_flickering_score_does_not_spam():
    assert [a for a in _run([5, 4, 5, 4, 5, 4, 5, 3, 5]) if a] == [("raised", "urgent")]
    # below the clear line but only for minutes: still held (needs 1 h of clinical time)
    assert [a for a in _run([5, 3, 3, 3, 5], every_minutes=5) if a] == [("raised", "urgent")]


def test_single_parameter_three_is_an_info_alert():
    got = [a for a in _run([3, 3, 0, 0, 0], rule=RULES.rule("news2", "news2:single-parameter")) if a]
    assert got == [("raised", "info"), ("cleared", "info")]


def test_a_cleared_alert_is_not_raised_again_within_the_refractory_period():
    # cleared at 90 min; the same level again 30 min later is held back, a higher level breaks through
    assert [a for a in _run([5, 3, 3, 3, 5, 7]) if a] == [("raised", "urgent"), ("cleared", "urgent"),
                                                           ("raised", "emergency")]
    # once the refractory hour has passed, the same level raises again
    got = _run([5, 3, 3, 3, 5, 5, 5])
    assert [a for a in got if a] == [("raised", "urgent"), ("cleared", "urgent"), ("raised", "urgent")]
    assert got.index(("raised", "urgent"), 1) == 5  # at 150 min: 60 min after clearing
    # a state blob written before the refractory period existed still loads
    assert RuleState.loads('{"level": null, "below": 0, "below_since": null}') == RuleState()


def test_stale_vitals_raise_a_technical_alert_that_clears_with_the_next_vital():
    rule = RULES.rule("news2", "news2:stale-vitals")
    state, seen = RuleState(), []
    stale_at = int(DEFAULT_POLICY.thresholds("news2", "news2:stale-vitals")["info"] * 60) + 1
    for at_min, vitals in ((0, [_m("hr", 80, 0)]), (60, [_m("hr", 80, 0)]), (stale_at, [_m("hr", 80, 0)]),
                           (200, [_m("hr", 80, 0)]), (210, [_m("hr", 80, 0), _m("hr", 82, 205)])):
        score = news2.score_view(_view(vitals, now=T0 + timedelta(minutes=at_min)))
        state, alert = step(rule, state, score)
        seen.append(None if alert is None else (alert.state, alert.level))
    assert seen == [None, None, ("raised", "info"), None, ("cleared", "info")]
    assert score.tasks["news2"].detail["newest_vital_age_h"] == round(5 / 60, 3)
    assert news2.score_view(_view([], now=T0)).tasks["news2"].detail["newest_vital_age_h"] is None
