"""MedM2T and NEWS2 side by side in the live worker, on the real broker and Redis: `medm2t replay` of the
30 synthetic stays -> `medm2t worker` with MEDM2T_SCORERS=auto and a real checkpoint -> Redis, risk.scores.v1,
models:medm2t. Plus the scorer selection and model-fault paths without a broker.

The checkpoint is built here in seconds from the same cohort, with UNTRAINED weights (BatchNorm statistics
warmed on one batch): these tests check plumbing (checkpoint -> worker -> scores equal to offline inference),
not accuracy.
"""
from __future__ import annotations

import json
import math
import shutil
from datetime import timedelta

import pytest
import torch

from conftest import running_worker
from medm2t import topics
from medm2t.events import RiskScore
from stream import keys
from test_pipeline_integration import _counter, _offline, _redis, _replay, _wait

TASKS = {"mortality", "los_remaining", "cvd_90d"}
REDIS_DB = 1  # apart from test_pipeline_integration's NEWS2-only worker state in db 0


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


@pytest.fixture(scope="module")
def checkpoint(synth_cohort, tmp_path_factory):
    """(folder, model_version) of a small-preset checkpoint fitted on the synthetic cohort."""
    from model.checkpoint import save_checkpoint
    from model.config import ModelConfig
    from model.features import Featurizer, collate
    from model.network import MedM2T
    from replay.sources import parse_spec

    stays = list(parse_spec(f"synth:{synth_cohort}").stays())
    cfg = ModelConfig.from_preset("small")
    feat = Featurizer.fit(stays, cfg)
    torch.manual_seed(0)
    model = MedM2T(cfg, feat.spec())
    model.train()  # move BatchNorm running stats off their init values so outputs differ between stays
    with torch.no_grad():
        model(collate([feat.encode(s, s[0].time + timedelta(hours=12)) for s in stays], cfg))
    out = save_checkpoint(tmp_path_factory.mktemp("ck") / "medm2t", model.eval(), feat, cfg, {},
                          {"data": "30-stay synthetic cohort", "note": "untrained weights (pipeline test)",
                           "tasks_without_labels": ["cvd_90d"]})
    return out, json.loads((out / "meta.json").read_text())["model_version"]


@pytest.fixture(scope="module")
def settings(pipeline_settings, checkpoint):
    base = pipeline_settings.redis_url.rsplit("/", 1)[0]
    return pipeline_settings.model_copy(update={"redis_url": f"{base}/{REDIS_DB}", "scorers": "auto",
                                                "checkpoint": checkpoint[0], "device": "cpu"})


@pytest.fixture(scope="module")
def replayed(settings, synth_cohort):
    """Replay at max speed into an auto worker; wait until every stay's final NEWS2 and MedM2T scores are in."""
    r = _redis(settings)
    r.flushdb()
    per_stay, expected = _offline(synth_cohort, settings.history_max)
    log = settings.run_dir / "worker-medm2t.log"
    with running_worker(settings, log, OMP_NUM_THREADS="1") as proc:
        summary = _replay(settings, synth_cohort)

        def all_scored():
            for scorer in ("news2", "medm2t"):
                raws = r.mget([keys.latest_score(sid, scorer) for sid in expected])
                if not all(raw and RiskScore.model_validate_json(raw).scored_at == expected[sid].scored_at
                           for sid, raw in zip(expected, raws)):
                    return False
            return True

        _wait(all_scored, 120, "every stay's final NEWS2 and MedM2T scores", log)
        yield per_stay, expected, summary, log, proc


def _valid_events_on_topic(settings, stay_ids: set[int]) -> dict[int, list]:
    """Every valid model input on the events topic for `stay_ids`, de-duplicated by event id, in topic order."""
    from medm2t.events import parse_event
    from stream.kafka import groupless_consumer

    consumer = groupless_consumer(settings, [topics.EVENTS], True, consumer_timeout_ms=3000)
    per_stay: dict[int, dict] = {sid: {} for sid in stay_ids}
    try:
        for message in consumer:
            try:
                event = parse_event(message.value)
            except ValueError:  # the poison messages of test_pipeline_integration
                continue
            if event.stay_id in per_stay and event.kind != "outcome":
                per_stay[event.stay_id].setdefault(event.event_id, event)
    finally:
        consumer.close()
    return {sid: list(events.values()) for sid, events in per_stay.items()}


def _latest(r, sid, scorer) -> RiskScore:
    return RiskScore.model_validate_json(r.get(keys.latest_score(sid, scorer)))


@pytest.mark.integration
@pytest.mark.slow
def test_every_stay_is_scored_by_both_and_medm2t_matches_offline_inference(settings, checkpoint, replayed):
    from model.scorer import MedM2TScorer
    from stream.state import offline_view

    per_stay, expected, summary, log, _ = replayed
    assert "replayed 30 stays" in summary
    assert "scoring with NEWS2 only" not in log.read_text()
    r = _redis(settings)
    offline = MedM2TScorer.load(checkpoint[0], "cpu")
    views = [offline_view(per_stay[sid], settings.history_max) for sid in expected]
    want_medm2t = dict(zip(expected, offline.score_batch(views)))
    # The worker scores incrementally: a stay's state holds every event of the views it was given, so for the
    # two stays with > history_max (2000) measurements its values are a recompute over the full stream. When
    # the store trimmed events the state never saw (a worker catching up a backlog, e.g. after
    # test_pipeline_integration filled the topic), the scorer recomputes the bounded view instead. The extra
    # event test_pipeline_integration sends for one stay is on the topic too. So each stay's values must
    # equal one of these recomputes; the view-derived fields (inputs_seen, ...) must match exactly.
    streams = [{sid: [e for e in per_stay[sid] if e.kind != "outcome"] for sid in expected},
               _valid_events_on_topic(settings, set(expected))]
    want_values = [{sid: {t: s.tasks[t].value for t in TASKS} for sid, s in want_medm2t.items()}]
    for stream in streams:
        full = offline.predictor.predict([(stream[sid], expected[sid].scored_at) for sid in expected])
        want_values.append({sid: {"mortality": p["mortality"], "los_remaining": p["los_remaining"],
                                  "cvd_90d": 1.0 - p["cvd_90d"]["none"]} for sid, p in zip(expected, full)})
    mortality = set()
    for sid in expected:
        assert _latest(r, sid, "news2").tasks == expected[sid].tasks, f"stay {sid}"
        got, want = _latest(r, sid, "medm2t"), want_medm2t[sid]
        assert got.model_version == checkpoint[1], f"stay {sid}"
        assert set(got.tasks) == TASKS and not any("non-finite" in m for m in got.missing), f"stay {sid}: {got.missing}"
        mort, los, cvd = (got.tasks[t] for t in ("mortality", "los_remaining", "cvd_90d"))
        assert mort.kind == "probability" and 0.0 <= mort.value <= 1.0 and math.isfinite(mort.value)
        assert los.kind == "days" and math.isfinite(los.value) and los.value >= 0.0
        assert cvd.kind == "class_probabilities" and set(cvd.probabilities) == {"none", "chd", "stroke", "hf"}
        assert math.isclose(sum(cvd.probabilities.values()), 1.0, abs_tol=1e-4)
        assert all(t.calibration.strip() for t in got.tasks.values())
        assert "untrained head" in cvd.calibration
        # the live score is the offline one: same inputs reached the model through Kafka and Redis
        assert (got.scored_at, got.inputs_seen, got.missing, got.hours_since_admission) == (
            want.scored_at, want.inputs_seen, want.missing, want.hours_since_admission), f"stay {sid}"
        assert any(all(math.isclose(got.tasks[t].value, w[sid][t], rel_tol=1e-4, abs_tol=1e-5) for t in TASKS)
                   for w in want_values), (sid, {t: got.tasks[t].value for t in TASKS}, [w[sid] for w in want_values])
        assert r.zcard(keys.score_history(sid, "medm2t")) >= 1
        mortality.add(round(mort.value, 6))
    assert len(mortality) > 1, "every stay got the same mortality: the model is not reading the stays' data"


@pytest.mark.integration
@pytest.mark.slow
def test_scores_topic_carries_medm2t_scores_too(settings, checkpoint, replayed):
    from stream.kafka import groupless_consumer

    _, expected, _, _, _ = replayed
    r = _redis(settings)
    consumer = groupless_consumer(settings, [topics.SCORES], True, consumer_timeout_ms=3000)
    try:  # the topic is shared with other test modules: the checkpoint's version tells ours apart
        ours = [s for s in (RiskScore.model_validate_json(m.value) for m in consumer)
                if s.scorer == "medm2t" and s.model_version == checkpoint[1]]
    finally:
        consumer.close()
    latest = {}
    for s in ours:
        latest[s.stay_id] = s
    assert set(latest) == set(expected)
    assert all(latest[sid] == _latest(r, sid, "medm2t") for sid in expected)


@pytest.mark.integration
@pytest.mark.slow
def test_model_cards_are_published_for_both_scorers(settings, checkpoint, replayed):
    from stream.alerts import probability_rules

    r = _redis(settings)
    card = json.loads(r.get(keys.model_card("medm2t")))
    assert card["version"] == checkpoint[1] and card["name"] == "MedM2T"
    assert card["calibration"] and card["preset"] == "small" and card["tasks_without_labels"] == ["cvd_90d"]
    assert card["training_data"]["data"] == "30-stay synthetic cohort"
    assert card["thresholds"]["mortality"] == {t.level: t.raise_at for t in probability_rules("mortality").tiers}
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
    from model.scorer import MedM2TScorer
    from replay.sources import parse_spec
    from stream.state import offline_view

    stay = next(iter(parse_spec(f"synth:{synth_cohort}").stays()))
    scorer = MedM2TScorer.load(checkpoint[0], "cpu")
    with torch.no_grad():
        scorer.predictor.model.fusion.heads.mortality.bias.fill_(float("nan"))
    with caplog.at_level("WARNING", logger="model.scorer"):
        score, = scorer.score_batch([offline_view(stay, 2000)])
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


@pytest.mark.parametrize("max_states", [4096, 2])
def test_incremental_scorer_equals_a_full_recompute_over_growing_micro_batches(checkpoint, synth_cohort, max_states,
                                                                               caplog):
    """MedM2TScorer keeps per-stay state and applies only new events; batch after batch (and with an LRU cache
    smaller than the batch, so states are evicted and rebuilt from the view) its scores equal a from-scratch
    Predictor.predict on the same events, and redelivering the same views changes nothing."""
    from model.scorer import MedM2TScorer
    from replay.sources import parse_spec

    stays = [s for s in parse_spec(f"synth:{synth_cohort}").stays()][:4]
    scorer = MedM2TScorer.load(checkpoint[0], "cpu", max_states=max_states)
    checked = 0
    caplog.set_level("WARNING", logger="model.scorer")
    for hour in (0.5, 3, 9, 20, 45, 400):
        # each stay on its own clock, the later ones joining the batches a few hours after the first
        batch = [_views_at(s, s[0].time + timedelta(hours=hour - 4 * k)) for k, s in enumerate(stays)]
        batch = [(v, evs) for v, evs in batch if evs]
        views = [v for v, _ in batch]
        scores = scorer.score_batch(views)
        want = scorer.predictor.predict([(evs, v.now) for v, evs in batch])
        for v, got, w in zip(views, scores, want):
            g = _values(got)
            assert g["mortality"] == pytest.approx(w["mortality"], abs=1e-5), (hour, v.stay_id)
            assert g["los_remaining"] == pytest.approx(w["los_remaining"], abs=1e-5), (hour, v.stay_id)
            assert g["los_total"] == pytest.approx(w["los_total"], abs=1e-5), (hour, v.stay_id)
            for c, p in w["cvd_90d"].items():
                assert g[f"cvd_{c}"] == pytest.approx(p, abs=1e-5), (hour, v.stay_id, c)
            assert got.hours_since_admission == pytest.approx(w["elapsed_h"]), (hour, v.stay_id)
            checked += 1
        again = scorer.score_batch(views)  # redelivery: the same views again
        if max_states >= len(stays):  # states kept: nothing new to apply, bit-identical scores
            assert [_values(a) for a in again] == [_values(s) for s in scores]
        else:  # evicted states are rebuilt from the view: equal up to float summation order
            assert [_values(a) for a in again] == [pytest.approx(_values(s), abs=1e-5) for s in scores]
        assert [(a.missing, a.inputs_seen) for a in again] == [(s.missing, s.inputs_seen) for s in scores]
        assert len(scorer._states) <= max_states
    assert checked >= 16
    assert not caplog.records, "a stay fell back from the incremental path"


def test_a_stay_whose_store_trimmed_unseen_events_is_scored_on_its_bounded_view(checkpoint, synth_cohort):
    """A worker catching up a backlog: the first view of a stay is already trimmed to history_max, so the
    events before it were never seen. The scorer recomputes the bounded view (no state holding an arbitrary
    middle of the stay); a stay it has followed from the start keeps its full-stream incremental state."""
    from dataclasses import replace

    from model.scorer import MedM2TScorer
    from replay.sources import parse_spec

    stay = next(iter(parse_spec(f"synth:{synth_cohort}").stays()))
    bound = 40
    scorer = MedM2TScorer.load(checkpoint[0], "cpu", history_max=bound)
    early, _ = _views_at(stay, stay[0].time + timedelta(hours=1))
    late, seen = _views_at(stay, stay[0].time + timedelta(hours=30))
    assert len(early.measurements) < bound < len(late.measurements)
    trimmed = replace(late, measurements=late.measurements[-bound:])
    opened = [late.opened] if late.opened else []
    bounded = scorer.predictor.predict([(opened + trimmed.measurements + trimmed.ecgs, late.now)])[0]
    full = scorer.predictor.predict([(seen, late.now)])[0]
    assert abs(bounded["mortality"] - full["mortality"]) > 1e-6  # the two semantics differ on this stay

    def bounded_view(minutes):
        view, _ = _views_at(stay, stay[0].time + timedelta(minutes=minutes))
        return replace(view, measurements=view.measurements[-bound:])

    # backlog: the first view of the stay (at 20 h) is already trimmed; then the worker keeps up
    for quarter in range(20 * 4, 30 * 4):
        scorer.score_batch([bounded_view(15 * quarter)])
    got = _values(scorer.score_batch([trimmed])[0])
    assert got["mortality"] == pytest.approx(bounded["mortality"], abs=1e-5)
    assert trimmed.stay_id not in scorer._states

    followed = MedM2TScorer.load(checkpoint[0], "cpu", history_max=bound)
    for quarter in range(4, 30 * 4):  # followed from the start in small batches, each view bounded like the store's
        followed.score_batch([bounded_view(15 * quarter)])
    got = _values(followed.score_batch([trimmed])[0])
    assert got["mortality"] == pytest.approx(full["mortality"], abs=1e-5)
