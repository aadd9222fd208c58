"""`medm2t alerts calibrate` (stream/alert_tuning.py): the search runs the real alert engine and the live
quality figures, picks within the budget, and the CLI writes a policy the worker then loads."""
from __future__ import annotations

import json
import subprocess
from datetime import datetime, timedelta

import pytest

from medm2t.events import Outcome, RiskScore, TaskScore
from medm2t.settings import Settings
from stream.alert_tuning import alert_trails, choose, evaluate, search, tradeoff, with_rule
from stream.policy import DEFAULT_POLICY, POLICY_FILE, load_policy, read_policy
from stream.quality import scorer_quality
from tests.helpers.paths import MEDM2T

T0 = datetime(2150, 1, 1, 8, 0)


def _stay(stay_id: int, risks: list[float], died: bool) -> tuple[list[RiskScore], Outcome]:
    scores = [RiskScore(stay_id=stay_id, subject_id=stay_id, scorer="medm2t", model_version="m",
                        scored_at=T0 + timedelta(hours=h), score_id=f"{stay_id}-{h}",
                        tasks={"mortality": TaskScore(value=p, kind="probability", calibration="uncalibrated")})
              for h, p in enumerate(risks)]
    end = T0 + timedelta(hours=len(risks))
    outcome = Outcome(event_id=f"o{stay_id}", stay_id=stay_id, subject_id=stay_id, time=end, available_time=end,
                      source="test", hospital_death=died, deathtime=end if died else None, icu_intime=T0,
                      icu_outtime=end)
    return scores, outcome


def _ward():
    """Two deaths whose risk rises to 0.2-0.25 hours before, and survivors who sit at 0.1-0.15 for a while."""
    stays = [_stay(1, [0.05] * 10 + [0.25] * 6, True), _stay(2, [0.05] * 12 + [0.2] * 5, True)]
    stays += [_stay(10 + i, [0.05] * 20 + [0.12 + 0.01 * i] * 4 + [0.05] * 24, False) for i in range(4)]
    return {s[0].stay_id: s for s, _ in stays}, [o for _, o in stays]


def test_the_search_picks_the_threshold_that_flags_the_deaths_within_the_budget():
    scores, outcomes = _ward()
    candidates = search(DEFAULT_POLICY, "medm2t", "mortality", scores, outcomes, refractory_min=(60.0, 240.0))
    # the default 0.30 flags nothing; a threshold between the survivors' plateau and the deaths' rise flags both
    assert evaluate(DEFAULT_POLICY, "medm2t", scores, outcomes).deaths_flagged_2h_count == 0
    choice = choose(candidates, budget=10.0)
    best = choice.candidate
    assert choice.reached and best.quality.deaths_flagged_2h_count == 2 and 0.15 < best.urgent <= 0.2
    # of the thresholds that flag both deaths, the one that alerts no survivor: the lightest load
    assert best.quality.stays_alerted == 2 / 6 and best.quality.ppv == 1.0
    # a budget below two alerts over the ward's patient-days leaves room for one death only: target missed
    days = sum((o.icu_outtime - o.icu_intime).total_seconds() for o in outcomes) / 86400
    tight = choose(candidates, budget=1.5 / days)
    assert not tight.reached and tight.candidate.quality.alerts == 1
    assert tight.candidate.quality.deaths_flagged_2h_count == 1
    assert choose(candidates, budget=0.5 / days) is None
    # half the deaths is reachable with one alerted stay; the curve rises with the share flagged
    assert choose(candidates, budget=10.0, target=0.5).candidate.quality.stays_alerted == 1 / 6
    curve = tradeoff(candidates)
    assert [p["deaths_flagged_2h"] for p in curve] == sorted(p["deaths_flagged_2h"] for p in curve)
    assert curve[-1]["deaths_flagged_2h"] == 1.0 and curve[-1]["stays_alerted"] == 2 / 6
    # every candidate's figures are the live figures of its policy through the same engine
    tuned = with_rule(DEFAULT_POLICY, "medm2t", "mortality", best.urgent, best.emergency, best.refractory_min)
    assert scorer_quality("medm2t", outcomes, alert_trails(tuned, scores)) == best.quality


def _run(*args, timeout=600):
    return subprocess.run([MEDM2T, "alerts", "calibrate", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_calibrate_writes_a_policy_the_worker_loads(synth_cohort, tmp_path):
    out = tmp_path / "ck-copy" / POLICY_FILE
    done = _run("--data", f"synth:{synth_cohort}", "--budget", "3", "--skip", "2", "--limit", "12", "--out", str(out),
                "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    policy = read_policy(out)
    assert policy.thresholds("medm2t", "mortality")["urgent"] == report["urgent"]
    assert policy.tuned["budget"] == 3 and policy.tuned["stays"] == 12
    chosen = report["figures"]["MedM2T, calibrated"]
    assert chosen["alerts_per_patient_day"] <= 3 and chosen == policy.tuned["figures"]
    assert load_policy(Settings(checkpoint=out.parent), ["news2", "medm2t"]) == policy


def test_calibrate_says_why_it_cannot_run(tmp_path):
    done = _run("--data", "synth:/nonexistent", "--budget", "1.2", "--checkpoint", str(tmp_path))
    assert done.returncode != 0 and "no MedM2T checkpoint" in done.stderr
    done = _run("--data", "synth:/nonexistent", "--budget", "0")
    assert done.returncode != 0 and "--budget must be a positive" in done.stderr
    done = _run("--data", "synth:/nonexistent", "--budget", "1", "--skip", "-1")
    assert done.returncode != 0 and "--skip must be 0 or more" in done.stderr
