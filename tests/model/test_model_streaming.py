"""Streaming side of MedM2T: incremental state == recompute from raw events, the batched Predictor and the
worker-facing MedM2TScorer (real model, real checkpoint files; the weights are untrained but fixed)."""
from __future__ import annotations

import math
from datetime import timedelta

import numpy as np
import pytest
import torch

from medm2t.events import Ecg, Measurement, StayOpened
from stream.scoring import Scorer, StayView
from tests.helpers.stays import T0, _ev, make_stay


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: one thread is fastest


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return _checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def checkpoint_time_encoding(tmp_path_factory):
    """The same stays and model with the sparse encoders' window time encoding on."""
    return _checkpoint(tmp_path_factory, window_time_dim=6)


def _checkpoint(tmp_path_factory, **overrides):
    from model.checkpoint import save_checkpoint
    from model.config import ModelConfig
    from model.feature_fit import fit_featurizer
    from model.network import MedM2T

    rng = np.random.default_rng(7)
    stays = [make_stay(100 + i, rng, ecgs=i % 2, n=50) for i in range(12)]
    cfg = ModelConfig.from_preset("small")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    feat = fit_featurizer(stays, cfg)
    torch.manual_seed(0)
    model = MedM2T(cfg, feat.spec()).eval()
    # move BatchNorm running stats off their init values so eval-mode paths are exercised for real
    from model.inputs import collate

    model.train()
    with torch.no_grad():
        model(collate([feat.encode(s, T0 + timedelta(hours=24)) for s in stays], cfg))
    model.eval()
    out = tmp_path_factory.mktemp("ck") / "ck"
    save_checkpoint(out, model, feat, cfg, {}, {"data": "hand-made test stays", "tasks_without_labels": ["cvd_90d"]})
    return out, stays


def _recompute(model, feat, cfg, events, at):
    from model.inputs import collate

    with torch.no_grad():
        return model(collate([feat.encode(events, at)], cfg))


@pytest.mark.parametrize("which", ["checkpoint", "checkpoint_time_encoding"])
def test_incremental_equals_recompute(which, request):
    from model.checkpoint import load_checkpoint
    from model.incremental import IncrementalEncoder

    ck, _ = request.getfixturevalue(which)
    model, feat, cfg, _ = load_checkpoint(ck)
    assert cfg.window_time_dim == (6 if which == "checkpoint_time_encoding" else 0)
    assert all((model.encoders[g].time_enc is not None) == (cfg.window_time_dim > 0) for g in model.sparse_groups)
    rng = np.random.default_rng(11)
    stays = [make_stay(200 + i, rng, hours=60, n=90, ecgs=2) for i in range(3)]
    inc = IncrementalEncoder(model, feat)
    states = [inc.new_state() for _ in stays]
    streams = [[e for e in s if isinstance(e, (StayOpened, Measurement, Ecg))] for s in stays]
    checked = 0
    for hour in (0.5, 3, 7, 20, 26, 31, 59):
        at = T0 + timedelta(hours=hour)
        for st, events in zip(states, streams):
            new = [e for e in events if e.available_time <= at]
            inc.update(st, new[-7:])   # redelivered + new events: already-seen ids are skipped
            inc.update(st, new)
        got = inc.score(states, [at] * len(states))
        for i, events in enumerate(streams):
            want = _recompute(model, feat, cfg, [e for e in events if e.available_time <= at], at)
            for k in want:
                assert torch.allclose(got[k][i], want[k][0], atol=1e-5), (hour, i, k)
            checked += 1
    assert checked == 21
    # vitals history stays bounded: only the last 24 h plus one older value per channel
    assert all(len(st.vit) < sum(isinstance(e, Measurement) and e.concept is not None for e in ev) for st, ev in zip(states, streams))


def test_vitals_grids_of_a_batch_equal_each_stays_grid_from_its_events(checkpoint):
    """The incremental scorer builds the vitals grids of a whole batch in one vectorised call: each equals the
    grid a full recompute builds from the stay's events at its own time (before, inside and across the
    grid's 24 h, with an empty stay among them)."""
    from model.checkpoint import load_checkpoint
    from model.incremental import IncrementalEncoder
    from model.inputs import hours, vitals_grid

    model, feat, cfg, _ = load_checkpoint(checkpoint[0])
    rng = np.random.default_rng(12)
    stays = [make_stay(300 + i, rng, hours=60, n=n, ecgs=0) for i, n in enumerate((120, 0, 40, 200))]
    inc = IncrementalEncoder(model, feat)
    for ats in ([2, 2, 2, 2], [59, 0.1, 30, 25], [26, 59, 1, 48]):
        at = [T0 + timedelta(hours=h) for h in ats]
        states = [inc.update(inc.new_state(), [e for e in s if e.available_time <= a]) for s, a in zip(stays, at)]
        got = inc.vitals_grids(states, np.asarray([hours(a, T0) for a in at]))
        for i, (s, a) in enumerate(zip(stays, at)):
            want = vitals_grid(cfg, feat.encode([e for e in s if e.available_time <= a], a))
            assert (got[i] == want).all(), (ats, i)


def test_a_snapshot_keeps_the_state_as_of_its_point_while_the_state_moves_on(checkpoint):
    """The worker scores several points of one stay in one pass from snapshots: each equals the recompute at
    its own point, whatever was applied to the live state after it (sparse windows, vitals, ECGs)."""
    from model.checkpoint import load_checkpoint
    from model.incremental import IncrementalEncoder

    ck, _ = checkpoint
    model, feat, cfg, _ = load_checkpoint(ck)
    stay = [e for e in make_stay(400, np.random.default_rng(3), hours=40, n=90, ecgs=3)
            if isinstance(e, (StayOpened, Measurement, Ecg))]
    inc = IncrementalEncoder(model, feat)
    state, snaps, ats = inc.new_state(), [], [T0 + timedelta(hours=h) for h in (2, 9, 21, 39)]
    for at in ats:
        inc.update(state, [e for e in stay if e.available_time <= at])
        snaps.append(inc.snapshot(state))
    got = inc.score(snaps, ats)
    for i, at in enumerate(ats):
        want = _recompute(model, feat, cfg, [e for e in stay if e.available_time <= at], at)
        for k in want:
            assert torch.allclose(got[k][i], want[k][0], atol=1e-5), (at, k)


def test_incremental_with_fewer_encoders_ignores_the_other_modalities(checkpoint):
    """A model without ECG or dense-vitals encoders (e.g. trained on PhysioNet 2012) scores stays that have
    ECGs incrementally, equal to recompute, instead of failing on the missing encoder."""
    from model.config import ModelConfig
    from model.feature_fit import fit_featurizer
    from model.incremental import IncrementalEncoder
    from model.network import MedM2T

    _, train = checkpoint
    cfg = ModelConfig.from_preset("small")
    cfg.modalities = ("static", "labs")
    feat = fit_featurizer(train, cfg)
    torch.manual_seed(0)
    model = MedM2T(cfg, feat.spec()).eval()
    stay = [e for e in make_stay(300, np.random.default_rng(5), hours=30, n=60, ecgs=2)
            if isinstance(e, (StayOpened, Measurement, Ecg))]
    assert any(isinstance(e, Ecg) for e in stay)
    inc = IncrementalEncoder(model, feat)
    state = inc.new_state()
    at = T0 + timedelta(hours=29)
    inc.update(state, [e for e in stay if e.available_time <= at])
    got, want = inc.score([state], [at]), _recompute(model, feat, cfg, [e for e in stay if e.available_time <= at], at)
    for k in want:
        assert torch.allclose(got[k][0], want[k][0], atol=1e-5), k
    assert not state.ecg_emb and set(state.counts) == {"labs"}


def test_incremental_cost_does_not_replay_history(checkpoint):
    """An update touches only the new events: old ECGs are never re-embedded."""
    from model.checkpoint import load_checkpoint
    from model.incremental import IncrementalEncoder

    ck, _ = checkpoint
    model, feat, _, _ = load_checkpoint(ck)
    inc = IncrementalEncoder(model, feat)
    rng = np.random.default_rng(5)
    stay = make_stay(300, rng, ecgs=3)
    st = inc.new_state()
    calls = []
    handle = model.encoders["ecg"].micro.register_forward_hook(lambda m, a, o: calls.append(o.shape[0]))
    try:
        events = [e for e in stay if isinstance(e, (StayOpened, Measurement, Ecg))]
        for e in events:
            inc.update(st, [e])
    finally:
        handle.remove()
    assert calls == [1, 1, 1]


def test_predictor_batches_and_reports_total_los(checkpoint):
    from model.inference import Predictor

    ck, stays = checkpoint
    pred = Predictor(ck, device="auto")
    assert pred.version.startswith("medm2t-arch-")
    items = [(s, T0 + timedelta(hours=h)) for s, h in zip(stays[:4], (1, 10, 24, 40))]
    out = pred.predict(items)
    alone = pred.predict(items[2:3])[0]
    assert len(out) == 4 and abs(out[2]["mortality"] - alone["mortality"]) < 1e-5
    for o, (_, at) in zip(out, items):
        assert 0 < o["mortality"] < 1 and o["los_remaining"] >= 0
        assert math.isclose(o["los_total"], o["elapsed_h"] / 24 + o["los_remaining"], rel_tol=1e-6)
        assert math.isclose(sum(o["cvd_90d"].values()), 1.0, rel_tol=1e-5)
    assert pred.predict([]) == []


def test_scorer_protocol_and_odd_stays(checkpoint):
    from stream.scorers.medm2t import MedM2TScorer

    ck, stays = checkpoint
    scorer = MedM2TScorer.load(ck, device="cpu")
    assert isinstance(scorer, Scorer) and scorer.name == "medm2t"
    s = stays[0]
    opened = s[0]
    now = T0 + timedelta(hours=20)
    meas = [e for e in s if isinstance(e, Measurement) and e.available_time <= now]
    odd = _ev(Measurement, opened.stay_id, "odd", T0 + timedelta(hours=1), item="never-seen", category="lab", value=1.0)
    views = [
        StayView(opened.stay_id, opened.subject_id, now, opened, [*meas, odd], []),
        StayView(opened.stay_id, opened.subject_id, T0, opened, [], []),          # no data yet
        StayView(999, 999, now, None, meas[:3], []),                              # StayOpened never arrived
    ]
    scores = scorer.score_batch(views)
    assert [r.stay_id for r in scores] == [opened.stay_id, opened.stay_id, 999]
    full, empty, orphan = scores
    for r in scores:
        assert r.scorer == "medm2t" and r.model_version == scorer.version
        assert set(r.tasks) == {"mortality", "los_remaining", "cvd_90d"}
        assert all(math.isfinite(t.value) for t in r.tasks.values())
        assert r.tasks["mortality"].kind == "probability" and r.tasks["los_remaining"].kind == "days"
        cvd = r.tasks["cvd_90d"]
        assert cvd.kind == "class_probabilities" and set(cvd.probabilities) == {"none", "chd", "stroke", "hf"}
        assert "untrained head" in cvd.calibration and r.tasks["mortality"].calibration == "uncalibrated model output"
    assert full.tasks["mortality"].detail["unknown_items_ignored"] == 1 and full.inputs_seen == len(meas) + 1
    assert "12-lead ECG" in full.missing and "lab results" not in full.missing  # in clinical words
    assert "lab results" in empty.missing and "no measurements" in empty.tasks["mortality"].detail["note"]
    assert orphan.hours_since_admission is None and any("admission details" in m for m in orphan.missing)
    assert full.tasks["los_remaining"].detail["los_total_days"] >= full.tasks["los_remaining"].value
    assert scorer.score_batch([]) == []


def test_unknown_items_are_logged_once_each_and_counted_in_the_metrics(checkpoint, caplog):
    from prometheus_client import REGISTRY

    from stream.scorers.medm2t import MedM2TScorer

    ck, stays = checkpoint
    scorer = MedM2TScorer.load(ck, device="cpu")
    opened = stays[0][0]
    odd = [_ev(Measurement, opened.stay_id, f"odd{i}", T0 + timedelta(hours=1), item=item, category="lab", value=1.0)
           for i, item in enumerate(["never-seen-a", "never-seen-a", "never-seen-b"])]
    counted = REGISTRY.get_sample_value("medm2t_unknown_items_ignored_total") or 0.0
    state = scorer.new_state()
    with caplog.at_level("WARNING"):
        scorer.apply(state, [opened, odd[0]])
        scorer.apply(state, odd[1:])
    assert REGISTRY.get_sample_value("medm2t_unknown_items_ignored_total") == counted + 3
    warned = [r.getMessage() for r in caplog.records if "never seen in training" in r.getMessage()]
    assert len(warned) == 2 and any("never-seen-a" in w for w in warned) and any("never-seen-b" in w for w in warned)
    assert not state.broken


def test_last_tokens_vectorised_equal_the_event_by_event_rule():
    """IncrementalEncoder._update_last against the rule it implements, event by event: per (window, item)
    the latest clinical time wins, ties go to the later arrival, and the state's token stays when it is later.
    Random events with many ties in time, over a state that already holds tokens."""
    from types import SimpleNamespace

    from model.incremental import IncrementalEncoder

    rng = np.random.default_rng(5)
    for _ in range(200):
        n_win, n_items, n = int(rng.integers(1, 6)), int(rng.integers(1, 5)), int(rng.integers(1, 12))
        last = rng.integers(0, 9, (n_win, n_items))
        last_time = np.where(rng.random((n_win, n_items)) < 0.3, -np.inf, rng.integers(0, 6, (n_win, n_items)) * 1.0)
        last_time = np.maximum.accumulate(last_time, axis=0)  # as a state holds it: never falling window to window
        pg = SimpleNamespace(time=rng.integers(0, 8, n) * 1.0, item=rng.integers(0, n_items, n),
                             val=rng.integers(10, 99, n).astype(np.int32))
        win = rng.integers(0, n_win, n)
        want, want_t = last.copy(), last_time.copy()
        for k in np.argsort(pg.time, kind="stable"):
            upd = want_t[win[k]:, pg.item[k]] <= pg.time[k]
            want[win[k]:, pg.item[k]][upd] = pg.val[k]
            want_t[win[k]:, pg.item[k]][upd] = pg.time[k]
        IncrementalEncoder._update_last(last, last_time, win, pg)
        assert (last == want).all() and (last_time == want_t).all()
