"""MedM2T and NEWS2 side by side in the live worker, on the real broker and Redis: `medm2t replay` of the
30 synthetic stays -> `medm2t worker` with MEDM2T_SCORERS=auto and a real checkpoint -> Redis, risk.scores.v1,
models:medm2t. The live score stream must be the contract's (tests/helpers/contract.py) with the same model offline.
Plus the scorer selection and model-fault paths without a broker.

The checkpoint is built here in seconds from the same cohort, with UNTRAINED weights (BatchNorm statistics
warmed on one batch): these tests check plumbing (checkpoint -> worker -> scores equal to offline inference),
not accuracy.
"""
from __future__ import annotations

import asyncio
import json
import math
import shutil
from datetime import timedelta

import pytest
import torch

from medm2t import topics
from medm2t.events import RiskScore
from stream import keys
from stream.offline import MODEL_ROUNDING_STEPS, score_stream
from tests.helpers.contract import compare, expected_scores
from tests.helpers.pipeline import _counter, _fresh, _idle, _per_stay, _read, _redis, _replayed, _wait
from tests.helpers.processes import running_worker

TASKS = {"mortality", "los_remaining", "cvd_90d"}
REDIS_DB = 1  # apart from test_pipeline_integration's NEWS2-only worker state in db 0


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


@pytest.fixture(scope="module")
def settings(pipeline_settings, checkpoint):
    base = pipeline_settings.redis_url.rsplit("/", 1)[0]
    return pipeline_settings.model_copy(update={"redis_url": f"{base}/{REDIS_DB}", "scorers": "auto",
                                                "checkpoint": checkpoint[0], "device": "cpu"})


@pytest.fixture(scope="module")
def replayed(settings, synth_cohort):
    """Replay at max speed into an auto worker; wait until every point is scored. Yields the score stream."""
    per_stay = _per_stay(synth_cohort)
    n_inputs = sum(len(evs) for evs in per_stay.values())
    _fresh(settings)
    r = _redis(settings)
    log = settings.run_dir / "worker-medm2t.log"
    with running_worker(settings, log, OMP_NUM_THREADS="1") as proc:
        summary = _replayed(settings, synth_cohort)
        _wait(lambda: _idle(r, n_inputs), 300, "every point scored by NEWS2 and MedM2T", log)
        scores, n = score_stream(_read(settings, topics.SCORES))
        yield {"per_stay": per_stay, "scores": scores, "n_messages": n, "summary": summary, "log": log, "proc": proc}


def _latest(r, sid, scorer) -> RiskScore:
    return RiskScore.model_validate_json(r.get(keys.latest_score(sid, scorer)))


@pytest.mark.integration
@pytest.mark.slow
def test_the_live_medm2t_stream_is_the_contracts(settings, checkpoint, replayed):
    from stream.scorers.medm2t import MedM2TScorer
    from stream.scorers.news2 import News2Scorer

    assert "replayed 30 stays" in replayed["summary"]
    assert "scoring with NEWS2 only" not in replayed["log"].read_text()
    offline = MedM2TScorer.load(checkpoint[0], "cpu", cadence=timedelta(minutes=settings.medm2t_cadence_min))
    want = expected_scores(replayed["per_stay"], [News2Scorer(), offline])
    got = replayed["scores"]
    # Published values are rounded to 1e-4; float32 batches of other shapes may land on the other side.
    assert compare(got, want, steps=MODEL_ROUNDING_STEPS) == []
    assert replayed["n_messages"] == len(want), "an undisturbed run publishes each point once"
    ours = [s for s in got.values() if s.scorer == "medm2t"]
    assert {s.model_version for s in ours} == {checkpoint[1]}
    assert len(ours) < len([s for s in got.values() if s.scorer == "news2"]) / 2, "MedM2T scores on a cadence"
    r = _redis(settings)
    mortality = set()
    for sid in replayed["per_stay"]:
        latest = _latest(r, sid, "medm2t")
        assert latest == got[(sid, "medm2t", latest.scored_at)]
        assert set(latest.tasks) == TASKS and not any("non-finite" in m for m in latest.missing), latest.missing
        mort, los, cvd = (latest.tasks[t] for t in ("mortality", "los_remaining", "cvd_90d"))
        assert mort.kind == "probability" and 0.0 <= mort.value <= 1.0 and math.isfinite(mort.value)
        assert los.kind == "days" and math.isfinite(los.value) and los.value >= 0.0
        assert cvd.kind == "class_probabilities" and set(cvd.probabilities) == {"none", "chd", "stroke", "hf"}
        assert math.isclose(sum(cvd.probabilities.values()), 1.0, abs_tol=1e-3)
        assert all(t.calibration.strip() for t in latest.tasks.values())
        assert "untrained head" in cvd.calibration
        assert r.zcard(keys.score_history(sid, "medm2t")) >= 1
        mortality.add(mort.value)
    assert len(mortality) > 1, "every stay got the same mortality: the model is not reading the stays' data"


@pytest.mark.integration
@pytest.mark.slow
def test_each_live_medm2t_score_has_one_valid_fhir_risk_assessment(settings, replayed):
    """fhir.riskassessment.v1 carries one RiskAssessment per MedM2T score (none for NEWS2's points), each
    valid for fhir.resources and for the exported schema, with the score's own probabilities."""
    import jsonschema
    from fhir.resources.R4B.riskassessment import RiskAssessment

    from medm2t.fhir import RiskAssessmentV1
    from medm2t.schemas import schema_of

    schema = schema_of(RiskAssessmentV1)
    medm2t = {s.score_id: s for s in replayed["scores"].values() if s.scorer == "medm2t"}
    seen = {}
    for raw in _read(settings, topics.FHIR_RISK):
        jsonschema.validate(json.loads(raw), schema, format_checker=jsonschema.FormatChecker())
        ra = RiskAssessment.model_validate_json(raw)
        seen[ra.id] = ra
    assert set(seen) == set(medm2t)
    for score_id, ra in seen.items():
        score = medm2t[score_id]
        assert ra.encounter.reference == f"Encounter/{score.stay_id}"
        death = next(p for p in ra.prediction if p.outcome.coding[0].code == "death_in_hospital")
        assert float(death.probabilityDecimal) == score.tasks["mortality"].value
        assert score.tasks["mortality"].calibration in death.rationale


@pytest.mark.integration
@pytest.mark.slow
def test_state_rebuilt_from_redis_scores_like_the_live_state(settings, checkpoint, replayed):
    """What the store keeps of a stay (all measurements, the latest ECGs) is enough to rebuild MedM2T's state
    after a restart: rescoring each stay's last point from Redis alone gives its live score."""
    from stream.scorers.medm2t import MedM2TScorer
    from stream.scorers.news2 import News2Scorer
    from stream.runtime import StayRuntime
    from stream.scoring import StayPoint
    from stream.state import StayStore

    scorer = MedM2TScorer.load(checkpoint[0], "cpu")
    ecgs = {sid: sum(e.kind == "ecg" for e in evs) for sid, evs in replayed["per_stay"].items()}
    assert max(ecgs.values()) >= 2, "the cohort should have a stay with several ECGs, so that ECG state is rebuilt"

    async def rebuilt():
        from medm2t.connections import redis_async

        redis = redis_async(settings)
        try:
            store = StayStore(redis, [News2Scorer().needs, scorer.needs])  # as the live worker's store
            return [StayRuntime.rebuild(st, 0, [scorer]) for st in await store.load(list(replayed["per_stay"]))]
        finally:
            await redis.aclose()

    r = _redis(settings)
    for rt in asyncio.run(rebuilt()):
        latest = _latest(r, rt.stay_id, "medm2t")
        assert rt.scored == latest.scored_at and not rt.buffer
        score, = scorer.score([(rt.states["medm2t"], StayPoint(rt.stay_id, rt.subject_id, rt.scored, rt.opened,
                                                               rt.n_inputs))])
        assert score.inputs_seen == latest.inputs_seen
        for t in TASKS:
            assert score.tasks[t].value == pytest.approx(latest.tasks[t].value, abs=2e-4), (rt.stay_id, t)


@pytest.mark.integration
@pytest.mark.slow
def test_model_cards_and_the_alert_policy_are_published(settings, checkpoint, replayed):
    from stream.policy import AlertPolicy, load_policy

    r = _redis(settings)
    card = json.loads(r.get(keys.model_card("medm2t")))
    assert card["version"] == checkpoint[1] and card["name"] == "MedM2T"
    assert card["calibration"] and card["preset"] == "small" and card["tasks_without_labels"] == ["cvd_90d"]
    assert card["training_data"]["data"] == "30-stay synthetic cohort"
    assert AlertPolicy.model_validate_json(r.get(keys.ALERT_POLICY)) == load_policy(settings, ["news2", "medm2t"])
    assert json.loads(r.get(keys.model_card("news2")))["version"]
    assert _counter(r, "scorer_errors_medm2t") == 0


def test_auto_falls_back_to_news2_on_a_checkpoint_of_another_version(checkpoint, tmp_path, caplog):
    from medm2t.settings import Settings
    from stream.scorers import ScorerConfigError, select_scorers

    old = shutil.copytree(checkpoint[0], tmp_path / "old")
    meta = json.loads((old / "meta.json").read_text())
    (old / "meta.json").write_text(json.dumps({**meta, "architecture": "medm2t-arch-0"}))

    with caplog.at_level("WARNING", logger="stream.scorers"):
        scorers = select_scorers(Settings(scorers="auto", checkpoint=old, device="cpu"))
    assert [s.name for s in scorers] == ["news2"]
    reason = " ".join(r.getMessage() for r in caplog.records)
    assert "NEWS2 only" in reason and "medm2t-arch-0" in reason and "Retrain" in reason
    with pytest.raises(ScorerConfigError, match="medm2t-arch-0"):  # asked for by name: an error, not a fallback
        select_scorers(Settings(scorers="news2,medm2t", checkpoint=old, device="cpu"))
    assert [s.name for s in select_scorers(Settings(scorers="auto", checkpoint=checkpoint[0], device="cpu"))] == [
        "news2", "medm2t"]


def test_a_non_finite_model_output_is_reported_not_turned_into_a_number(checkpoint, synth_cohort, caplog):
    from stream.scorers.medm2t import MedM2TScorer
    from replay.sources import parse_spec

    stay = next(iter(parse_spec(f"synth:{synth_cohort}").stays()))
    scorer = MedM2TScorer.load(checkpoint[0], "cpu")
    with torch.no_grad():
        scorer.predictor.model.fusion.heads.mortality.bias.fill_(float("nan"))
    with caplog.at_level("WARNING", logger="stream.scorers.medm2t"):
        score, = scorer.score_batch([_views_at(stay, stay[-1].available_time)[0]])
    assert "mortality" not in score.tasks and {"los_remaining", "cvd_90d"} <= set(score.tasks)
    assert "mortality (non-finite model output)" in score.missing
    assert any("non-finite" in r.getMessage() and str(score.stay_id) in r.getMessage() for r in caplog.records)
    assert RiskScore.model_validate_json(score.model_dump_json()) == score  # still a valid message


def _views_at(stay, at):
    """The StayView of `stay` (its events, oldest first) once everything available by `at` has arrived."""
    from medm2t.events import Ecg, Measurement, StayOpened
    from stream.scoring import StayView

    seen = [e for e in stay if e.available_time <= at]
    opened = next((e for e in seen if isinstance(e, StayOpened)), None)
    key = lambda e: (e.available_time, e.time, e.event_id)
    return StayView(stay[0].stay_id, stay[0].subject_id, at, opened,
                    sorted((e for e in seen if isinstance(e, Measurement)), key=key),
                    sorted((e for e in seen if isinstance(e, Ecg)), key=key)), seen


def _values(score) -> dict:
    return {"mortality": score.tasks["mortality"].value, "los_remaining": score.tasks["los_remaining"].value,
            "los_total": score.tasks["los_remaining"].detail["los_total_days"],
            **{f"cvd_{c}": p for c, p in score.tasks["cvd_90d"].probabilities.items()}}


def test_incremental_scorer_equals_a_full_recompute_over_growing_micro_batches(checkpoint, synth_cohort, caplog):
    """The worker's use of MedM2TScorer: one state per stay, each point's new events applied, many stays
    scored in one pass. Batch after batch its scores equal a from-scratch Predictor.predict on the same
    events, and scoring the same points again changes nothing."""
    from stream.scorers.medm2t import MedM2TScorer
    from replay.sources import parse_spec
    from stream.scoring import StayPoint, canonical_order

    stays = [s for s in parse_spec(f"synth:{synth_cohort}").stays()][:4]
    scorer = MedM2TScorer.load(checkpoint[0], "cpu")
    states = {s[0].stay_id: scorer.new_state() for s in stays}
    applied = {sid: 0 for sid in states}
    checked = 0
    caplog.set_level("WARNING", logger="stream.scorers.medm2t")
    for hour in (0.5, 3, 9, 20, 45, 400):
        # each stay on its own clock, the later ones joining the batches a few hours after the first
        batch = [_views_at(s, s[0].time + timedelta(hours=hour - 4 * k)) for k, s in enumerate(stays)]
        batch = [(v, evs) for v, evs in batch if evs]
        items = []
        for v, evs in batch:
            ordered = canonical_order(evs)
            scorer.apply(states[v.stay_id], ordered[applied[v.stay_id]:])
            applied[v.stay_id] = len(ordered)
            items.append((states[v.stay_id], StayPoint(v.stay_id, v.subject_id, v.now, v.opened,
                                                       len(v.measurements) + len(v.ecgs))))
        scores = scorer.score(items)
        want = scorer.predictor.predict([(evs, v.now) for v, evs in batch])
        for (v, _), got, w in zip(batch, scores, want):
            g = _values(got)
            assert g["mortality"] == pytest.approx(w["mortality"], abs=1e-4), (hour, v.stay_id)
            assert g["los_remaining"] == pytest.approx(w["los_remaining"], abs=1e-3), (hour, v.stay_id)
            assert g["los_total"] == pytest.approx(w["los_total"], abs=1e-3), (hour, v.stay_id)
            for c, p in w["cvd_90d"].items():
                assert g[f"cvd_{c}"] == pytest.approx(p, abs=1e-4), (hour, v.stay_id, c)
            assert got.hours_since_admission == pytest.approx(w["elapsed_h"], abs=1e-3), (hour, v.stay_id)
            checked += 1
        again = scorer.score(items)  # the same points again: nothing new applied, the same scores
        assert [_values(a) for a in again] == [_values(s) for s in scores]
    assert checked >= 16
    assert not caplog.records, "a stay fell back from the incremental path"


@pytest.mark.integration
def test_a_stay_with_more_ecgs_than_the_model_reads_scores_the_same_live_and_rebuilt(pipeline_settings, checkpoint,
                                                                                     synth_cohort):
    """The store keeps the ECGs the scorers declare (MedM2T: its latest `needs.ecgs`). A stay with more ECGs
    than that scores the same from its live state, from the contract's replay and from a state rebuilt
    from Redis after a restart, so a restart can never change what the model sees."""
    from medm2t.connections import redis_async, redis_sync
    from medm2t.events import Ecg, dump_event, make_event_id
    from stream.scorers.medm2t import MedM2TScorer
    from replay.sources import parse_spec
    from stream.scorers.news2 import News2Scorer
    from stream.pipeline import Pipeline
    from stream.runtime import Message, StayRuntime
    from stream.scoring import StayPoint
    from stream.state import StayStore

    stay = next(s for s in parse_spec(f"synth:{synth_cohort}").stays() if any(isinstance(e, Ecg) for e in s))
    ecg = next(e for e in stay if isinstance(e, Ecg))
    scorer = MedM2TScorer.load(checkpoint[0], "cpu")
    extra = scorer.needs.ecgs + 2
    copies = [ecg.model_copy(update={"event_id": make_event_id("ecg-copy", ecg.stay_id, k),
                                     "study_id": ecg.study_id * 100 + k,
                                     "time": ecg.time + timedelta(minutes=20 * k),
                                     "available_time": ecg.available_time + timedelta(minutes=20 * k)})
              for k in range(1, extra + 1)]
    events = sorted([e for e in stay if e.kind != "outcome"] + copies, key=lambda e: (e.available_time, e.event_id))
    assert sum(isinstance(e, Ecg) for e in events) > scorer.needs.ecgs
    db = pipeline_settings.model_copy(update={"redis_url": pipeline_settings.redis_url.rsplit("/", 1)[0] + "/4"})
    redis_sync(db).flushdb()
    sent: list[bytes] = []

    async def send(topic, key, value):
        if topic == topics.SCORES:
            sent.append(value)
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def live_then_rebuilt():
        redis = redis_async(db)
        try:
            store = StayStore(redis, [News2Scorer().needs, scorer.needs])
            pipeline = Pipeline(store, [News2Scorer(), scorer], send, idle_ms=10**9)
            await pipeline.assign({0})
            await pipeline.ingest([Message(topics.EVENTS, 0, i, str(e.stay_id).encode(), dump_event(e))
                                   for i, e in enumerate(events)])
            pipeline.clocks.idle_s = 0.0
            while await pipeline.score_ready():
                pass
            restarted = [MedM2TScorer.load(checkpoint[0], "cpu")]
            stored, = await store.load([stay[0].stay_id])
            assert sum(isinstance(e, Ecg) for _, e in stored.events) == scorer.needs.ecgs  # what the model reads
            return StayRuntime.rebuild(stored, 0, restarted)
        finally:
            await redis.aclose()

    rt = asyncio.run(live_then_rebuilt())
    got, _ = score_stream(sent)
    want = expected_scores({stay[0].stay_id: events}, [News2Scorer(), MedM2TScorer.load(checkpoint[0], "cpu")])
    assert compare(got, want, steps=MODEL_ROUNDING_STEPS) == []
    last = max((s for s in got.values() if s.scorer == "medm2t"), key=lambda s: s.scored_at)
    assert rt.scored == last.scored_at
    rebuilt, = scorer.score([(rt.states["medm2t"], StayPoint(rt.stay_id, rt.subject_id, rt.scored, rt.opened,
                                                               rt.n_inputs))])
    assert rebuilt.inputs_seen == last.inputs_seen
    for t in TASKS:
        assert rebuilt.tasks[t].value == pytest.approx(last.tasks[t].value, abs=2e-4), t
