"""The alert policy (stream/policy.py): one typed object holds every number the alert engine acts on, it
round-trips through a file, bad files say why, and the worker's loading order is the documented one."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from pydantic import ValidationError

from medm2t.events import RiskScore, TaskScore
from medm2t.settings import Settings
from stream.scorers import news2
from stream.alerts import AlertRules, RuleState, step
from stream.policy import (
    DEFAULT_POLICY, POLICY_FILE, AlertPolicy, PolicyError, RulePolicy, TierPolicy, dumps, load_policy,
    probability_tiers, read_policy,
)

T0 = datetime(2150, 1, 1, 8, 0)


def _news2(points: int, minutes: int) -> RiskScore:
    task = TaskScore(value=points, kind="points", band="x", calibration=news2.CALIBRATION, detail={"max_single": 0})
    return RiskScore(stay_id=1, subject_id=2, scorer="news2", model_version=news2.VERSION,
                     scored_at=T0 + timedelta(minutes=minutes), tasks={"news2": task})


def _mortality(p: float, minutes: int) -> RiskScore:
    return RiskScore(stay_id=1, subject_id=2, scorer="medm2t", model_version="m", scored_at=T0 + timedelta(minutes=minutes),
                     tasks={"mortality": TaskScore(value=p, kind="probability", calibration="uncalibrated"),
                            "los_remaining": TaskScore(value=2.0, kind="days", calibration="uncalibrated")})


def _levels(policy: AlertPolicy, scores) -> list[tuple[str, str]]:
    rules, states, out = AlertRules(policy), {}, []
    for score in scores:
        for rule in rules.for_score(score):
            states[rule.key], alert = step(rule, states.get(rule.key, RuleState()), score, policy)
            if alert is not None:
                out.append((alert.state, alert.level))
    return out


def test_the_default_policy_is_rcp_2017_for_news2_and_reads_the_bands_from_the_score_definition():
    assert DEFAULT_POLICY.thresholds("news2", "news2") == {"urgent": news2.MEDIUM_AT, "emergency": news2.HIGH_AT}
    assert news2.response_band(news2.MEDIUM_AT, {}) == "medium" and news2.response_band(news2.HIGH_AT, {}) == "high"
    assert DEFAULT_POLICY.thresholds("medm2t", "mortality") == {"urgent": 0.30, "emergency": 0.50}


def test_the_engine_raises_at_the_policys_thresholds_not_at_constants_of_its_own():
    scores = [_news2(5, 0), _news2(6, 10)]  # within the 15 min before an unacknowledged alert escalates
    assert _levels(DEFAULT_POLICY, scores) == [("raised", "urgent")]
    stricter = AlertPolicy(rules={**DEFAULT_POLICY.rules, "news2/news2": RulePolicy(
        tiers=(TierPolicy(level="urgent", raise_at=6, clear_below=5), TierPolicy(level="emergency", raise_at=8, clear_below=7)))})
    assert _levels(stricter, scores) == [("raised", "urgent")] and _levels(stricter, scores[:1]) == []
    # a probability task takes its own entry, else probability_default
    ps = [_mortality(0.2, 0)]
    assert _levels(DEFAULT_POLICY, ps) == []
    own = AlertPolicy(rules={**DEFAULT_POLICY.rules, "medm2t/mortality": RulePolicy(tiers=probability_tiers(0.15, 0.4))})
    assert _levels(own, ps) == [("raised", "urgent")]


def test_the_refractory_period_comes_from_the_policy():
    # raised, cleared after two scores below spanning 1 h, then back above 40 min after the clear
    ps = [_mortality(p, m) for p, m in ((0.4, 0), (0.1, 30), (0.1, 60), (0.1, 90), (0.4, 130))]
    quiet = DEFAULT_POLICY.model_copy(update={"escalate_after_min": 10**6})  # leave escalation aside
    assert _levels(quiet, ps) == [("raised", "urgent"), ("cleared", "urgent")]
    short = quiet.model_copy(update={"probability_default": RulePolicy(tiers=probability_tiers(0.3, 0.5),
                                                                               refractory_min=30)})
    assert _levels(short, ps) == [("raised", "urgent"), ("cleared", "urgent"), ("raised", "urgent")]


def test_a_policy_round_trips_through_its_file(tmp_path):
    policy = AlertPolicy(name="tuned", escalate_after_min=10, tuned={"budget": 1.2},
                         rules={**DEFAULT_POLICY.rules, "medm2t/mortality": RulePolicy(tiers=probability_tiers(0.2, 0.45))})
    path = tmp_path / POLICY_FILE
    path.write_text(dumps(policy))
    assert read_policy(path) == policy


@pytest.mark.parametrize("text, says", [
    ("{not json", "not valid"),
    ('{"rules": {"news2/nope": {"tiers": [{"level": "info", "raise_at": 1, "clear_below": 1}]}}}', "unknown NEWS2 rule"),
    ('{"rules": {"medm2t/mortality": {"tiers": [{"level": "urgent", "raise_at": 0.3, "clear_below": 0.4}]}}}',
     "clear_below"),
    ('{"rules": {"medm2t/mortality": {"tiers": [{"level": "emergency", "raise_at": 0.3, "clear_below": 0.2},'
     ' {"level": "urgent", "raise_at": 0.5, "clear_below": 0.4}]}}}', "rise"),
    ('{"escalate_after_min": 0}', "greater than 0"),
    ('{"threshold": 0.3}', "Extra inputs"),
])
def test_a_bad_policy_file_says_what_is_wrong(tmp_path, text, says):
    path = tmp_path / "p.json"
    path.write_text(text)
    with pytest.raises(PolicyError, match=str(path)) as err:
        read_policy(path)
    assert says in str(err.value)
    with pytest.raises(PolicyError, match="cannot read"):
        read_policy(tmp_path / "missing.json")


def test_the_worker_loads_the_named_file_then_the_checkpoints_then_the_defaults(tmp_path, monkeypatch):
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / POLICY_FILE).write_text(dumps(AlertPolicy(name="from the checkpoint", escalate_after_min=20)))
    named = tmp_path / "named.json"
    named.write_text(dumps(AlertPolicy(name="named")))
    for var in ("MEDM2T_ALERT_POLICY", "MEDM2T_ESCALATE_AFTER_MIN", "MEDM2T_SNOOZE_MAX_MIN"):
        monkeypatch.delenv(var, raising=False)
    from_checkpoint = load_policy(Settings(checkpoint=ck), ["news2", "medm2t"])
    assert from_checkpoint.name == "from the checkpoint" and from_checkpoint.escalate_after_min == 20  # unset: the file's
    assert load_policy(Settings(checkpoint=ck), ["news2"]) == DEFAULT_POLICY  # the checkpoint's policy is MedM2T's
    assert load_policy(Settings(checkpoint=ck, alert_policy=named), ["news2", "medm2t"]).name == "named"
    assert load_policy(Settings(checkpoint=tmp_path), ["medm2t"]) == DEFAULT_POLICY
    monkeypatch.setenv("MEDM2T_ESCALATE_AFTER_MIN", "7")  # set explicitly: wins over the file
    loaded = load_policy(Settings(checkpoint=ck), ["medm2t"])
    assert loaded.escalate_after_min == 7 and loaded.name == "from the checkpoint"


def test_policy_objects_are_immutable():
    with pytest.raises(ValidationError):
        DEFAULT_POLICY.escalate_after_min = 1
