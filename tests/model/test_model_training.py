"""Training and evaluation on a tiny hand-made cohort of canonical events (real featurizer, network and
optimiser; nothing mocked). The cohort has a learnable signal: deaths have high lactate and heart rate."""
from __future__ import annotations

import json
import math
from datetime import datetime, timedelta

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from medm2t.events import Measurement, Outcome, StaticFeatures, StayClosed, StayOpened, make_event_id  # noqa: E402
from model.calibration import Calibration  # noqa: E402
from model.data import Cohort, fold_indices, split_indices, training_samples  # noqa: E402
from model.labels import targets_at  # noqa: E402
from model.landmarks import evaluation_landmarks, training_landmarks  # noqa: E402

T0 = datetime(2150, 1, 1, 8, 0)


def make_stay(i: int, rng: np.random.Generator, hours: int = 30) -> list:
    died = bool(rng.random() < 0.35)
    start = T0 + timedelta(days=i)
    common = dict(stay_id=1000 + i, subject_id=500 + i // 2, source="test")
    events: list = [StayOpened(
        event_id=make_event_id("test", i, "open"), time=start, available_time=start,
        static=StaticFeatures(gender="M" if i % 2 else "F", age=float(rng.integers(30, 90)),
                              first_careunit="MICU"), **common)]
    body = []
    for h in range(0, hours, 2):
        t = start + timedelta(hours=h, minutes=int(rng.integers(0, 60)))
        hr = rng.normal(110 if died else 80, 8)
        body.append(Measurement(event_id=make_event_id("test", i, "hr", h), time=t, available_time=t, item="hr",
                                category="vital", concept="hr", value=float(hr), **common))
        if h % 6 == 0:
            lac = rng.normal(4.5 if died else 1.2, 0.6)
            body.append(Measurement(event_id=make_event_id("test", i, "lac", h), time=t,
                                    available_time=t + timedelta(minutes=40), item="lactate", category="lab",
                                    value=float(lac), **common))
    body.sort(key=lambda e: (e.available_time, e.time, e.event_id))
    end = start + timedelta(hours=hours)
    out = end + timedelta(days=float(rng.uniform(0.5, 6)))
    events += body
    events.append(StayClosed(event_id=make_event_id("test", i, "close"), time=out, available_time=out, **common))
    events.append(Outcome(event_id=make_event_id("test", i, "out"), time=out, available_time=out, hospital_death=died,
                          icu_intime=start, icu_outtime=out, los_days=(out - start).total_seconds() / 86400, **common))
    return events


def tiny_cohort(n: int = 48, seed: int = 0) -> Cohort:
    rng = np.random.default_rng(seed)
    return Cohort.from_events("test:tiny", [make_stay(i, rng) for i in range(n)], f"tiny-{n}-{seed}")


# ---- pure logic: labels, landmarks, splits ---------------------------------------------------------


def test_targets_remaining_los_and_masking():
    stay = tiny_cohort(2).stays[0]
    outcome = stay[-1]
    at = T0 + timedelta(hours=10)
    t = targets_at(stay, at)
    assert t.los_remaining == pytest.approx((outcome.icu_outtime - at).total_seconds() / 86400)
    assert t.elapsed_days == pytest.approx(10 / 24)
    assert t.mortality == float(outcome.hospital_death) and t.cvd_90d is None  # no CVD label -> masked
    late = targets_at(stay, outcome.icu_outtime + timedelta(days=3))
    assert late.los_remaining == 0.0
    no_outcome = targets_at(stay[:-1], at)
    assert no_outcome.mortality is None and no_outcome.los_remaining is None


def test_landmarks_are_seeded_and_within_data():
    stay = tiny_cohort(1).stays[0]
    a = training_landmarks(stay, np.random.default_rng(3), 4)
    b = training_landmarks(stay, np.random.default_rng(3), 4)
    assert a == b and len(a) == 5
    data_times = [e.available_time for e in stay if isinstance(e, Measurement)]
    assert min(data_times) <= a[0] and a[-1] == max(data_times)
    lm = evaluation_landmarks(stay)
    assert list(lm) == ["6h", "12h", "24h", "end"]  # 30 h of data: 48 h is not reached
    # no data: scored on static inputs at admission; no StayOpened either: nothing to score
    assert evaluation_landmarks(stay[:1]) == {"end": stay[0].available_time}
    assert evaluation_landmarks([]) == {}


def test_evaluation_scores_every_stay_even_without_data():
    from model.evaluate import evaluate_model
    from model.train import build_model

    rng = np.random.default_rng(5)
    stays = [make_stay(i, rng) for i in range(12)]
    bare = [e for e in make_stay(99, rng) if e.kind != "measurement"]  # opened, closed, outcome: no data
    cohort = Cohort.from_events("test:bare", stays + [bare], "bare-13")
    featurizer = _fit_featurizer(cohort, list(range(12)))
    metrics = evaluate_model(build_model(featurizer.cfg, featurizer, 0), featurizer, cohort, None, use_cache=False,
                             progress=False)
    assert metrics["mortality"]["n"] == 13 and metrics["stays_scored"] == 13 and metrics["stays_static_only"] == 1
    assert metrics["landmarks"]["6h"]["mortality"]["n"] == 12


def test_splits_group_subjects_and_folds_partition():
    cohort = tiny_cohort(40)
    subj = np.array(cohort.subject_ids())
    tr, va = split_indices(cohort, 0.25, 0)
    assert not set(subj[tr]) & set(subj[va]) and sorted(tr + va) == list(range(40))
    folds = fold_indices(cohort, 4, 0)
    tests = [set(te) for _, te in folds]
    assert set().union(*tests) == set(range(40)) and sum(map(len, tests)) == 40
    for train, test in folds:
        assert not set(subj[train]) & set(subj[test])


# ---- training ---------------------------------------------------------------------------------------


def test_loss_falls_on_tiny_cohort():
    from model.batches import mean_loss
    from model.train import fit_one
    from model.train_options import TrainOptions

    cohort = tiny_cohort(48)
    tr, va = split_indices(cohort, 0.25, 0)
    opts = TrainOptions(epochs=4, pretrain_epochs=1, batch_size=16, patience=10, progress=False, use_cache=False)
    samples = training_samples(cohort, tr, _fit_featurizer(cohort, tr), opts.n_random, opts.seed, False, False)
    model, featurizer, cfg, info = fit_one(cohort, tr, cohort, va, opts, None, False)
    after = mean_loss(model, samples, 64, "cpu")
    torch.manual_seed(0)
    from model.train import build_model

    before = mean_loss(build_model(cfg, featurizer, 0), samples, 64, "cpu")
    assert after < 0.8 * before, (before, after, info["history"])
    assert info["history"][-1]["train_loss"] < info["history"][1]["train_loss"]  # [0]: before fine-tuning


def _fit_featurizer(cohort, idx):
    from model.config import ModelConfig
    from model.feature_fit import fit_featurizer

    return fit_featurizer(cohort.stays.subset(idx), ModelConfig.from_preset("small"))


def test_compact_stays_round_trip_events():
    cohort = tiny_cohort(3)
    rng = np.random.default_rng(0)
    original = make_stay(0, rng)
    assert cohort.stays[0] == original


def test_train_then_evaluate_cli_round_trip(tmp_path, monkeypatch, capsys):
    """medm2t synth -> train -> evaluate --json; a checkpoint of another version is a clear error."""
    from medm2t.cli import main

    monkeypatch.setenv("MEDM2T_CACHE_DIR", str(tmp_path / "cache"))
    data, ck = tmp_path / "synth", tmp_path / "ck"
    assert main(["synth", "--stays", "24", "--seed", "3", "--out", str(data), "--no-progress"]) == 0
    spec = f"synth:{data}"
    assert main(["train", "--data", spec, "--out", str(ck), "--epochs", "2", "--pretrain-epochs", "1",
                 "--landmarks", "1", "--batch-size", "16", "--quiet"]) == 0
    assert {"weights.pt", "featurizer.json", "model_card.md", "meta.json"} <= {p.name for p in ck.iterdir()}
    assert not (ck / "train_state.pt").exists()
    capsys.readouterr()
    assert main(["evaluate", "--checkpoint", str(ck), "--data", spec, "--json", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    mort = result["mortality"]
    assert mort["n"] == 24 and set(mort) >= {"auroc", "auprc_trapezoid", "average_precision", "brier", "ece", "positives"}
    assert 0.0 <= mort["brier"] <= 1.0
    assert result["los_remaining"]["n"] == 24 and math.isfinite(result["los_remaining"]["mae"])
    assert result["cvd_90d"]["n"] == 24 and "landmarks" in result and "6h" in result["landmarks"]
    assert sum(r["n"] for r in mort["reliability"]) == 24

    # calibrate on other stays: stored in the checkpoint, a new model version, applied by evaluate and the scorer
    other = tmp_path / "synth-val"
    assert main(["synth", "--stays", "60", "--seed", "5", "--out", str(other), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["calibrate", "--checkpoint", str(ck), "--data", f"synth:{other}", "--json"]) == 0
    fitted = json.loads(capsys.readouterr().out)
    weights_version = fitted["previous_version"].split("-cal")[0]  # train calibrates too; this replaces it
    assert fitted["model_version"] == weights_version + "-cal" + Calibration.from_dict(fitted["calibration"]).digest()
    assert json.loads((ck / "meta.json").read_text())["calibration"] == fitted["calibration"]
    assert "## Calibration" in (ck / "model_card.md").read_text() and "synth synth-val" in (ck / "model_card.md").read_text()
    png = tmp_path / "out" / "reliability.png"
    assert main(["evaluate", "--checkpoint", str(ck), "--data", spec, "--json", "--reliability-png", str(png)]) == 0
    calibrated = json.loads(capsys.readouterr().out)
    assert main(["evaluate", "--checkpoint", str(ck), "--data", spec, "--json", "--uncalibrated"]) == 0
    raw = json.loads(capsys.readouterr().out)
    assert calibrated["calibration"] == fitted["calibration"] and raw["calibration"] is None
    assert calibrated["mortality"]["auroc"] == pytest.approx(raw["mortality"]["auroc"])  # a temperature keeps the ranking
    assert calibrated["mortality"]["brier"] != raw["mortality"]["brier"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from stream.scorers.medm2t import MedM2TScorer

    scorer = MedM2TScorer.load(ck, device="cpu")
    assert scorer.version == fitted["model_version"]
    assert scorer._calibration["mortality"].startswith("calibrated (temperature ")
    assert scorer._calibration["los_remaining"].startswith("point estimate in days")
    assert scorer.card()["calibration_fit"] == fitted["calibration"]

    meta = json.loads((ck / "meta.json").read_text())
    meta["architecture"] = "medm2t-arch-0"
    (ck / "meta.json").write_text(json.dumps(meta))
    assert main(["evaluate", "--checkpoint", str(ck), "--data", spec, "--json"]) == 2
    assert "model version" in capsys.readouterr().err


def test_wide_head_is_fitted_first_and_is_the_whole_model_before_fine_tuning():
    from model.batches import make_batch, mean_loss
    from model.train import build_model
    from model.wide import L2_GRID, fit_wide_head

    cohort = tiny_cohort(48)
    tr, va = split_indices(cohort, 0.25, 0)
    featurizer = _fit_featurizer(cohort, tr)
    samples = training_samples(cohort, tr, featurizer, 2, 0, False, False)
    val = training_samples(cohort, va, featurizer, 2, 1, False, False)
    model = build_model(featurizer.cfg, featurizer, 0)
    before = mean_loss(model, samples, 64, "cpu")
    info = fit_wide_head(model, samples, val)
    assert info["l2"] in L2_GRID and len(info["val_loss_by_l2"]) == len(L2_GRID)
    assert mean_loss(model, samples, 64, "cpu") < 0.8 * before
    batch, _ = make_batch(samples[:8], "cpu", featurizer.cfg)
    with torch.no_grad():
        out = model.eval()(batch)
        wide = model.fusion.heads.wide(model.wide_features_of(batch))
    assert torch.allclose(out["mortality"], wide[:, 0], atol=1e-5)  # deep heads start at zero


def test_resume_continues_an_interrupted_run(tmp_path):
    from model.train import fit_one
    from model.train_options import TrainOptions

    cohort = tiny_cohort(32)
    tr, va = split_indices(cohort, 0.25, 0)
    state = tmp_path / "train_state.pt"
    opts = dict(batch_size=16, patience=10, progress=False, use_cache=False, n_random=1)
    _, _, _, first = fit_one(cohort, tr, cohort, va, TrainOptions(epochs=1, **opts), state, False)
    assert state.exists() and [h["epoch"] for h in first["history"]] == [0, 1]
    _, _, _, resumed = fit_one(cohort, tr, cohort, va, TrainOptions(epochs=3, **opts), state, True)
    assert [h["epoch"] for h in resumed["history"]] == [0, 1, 2, 3]
    assert resumed["history"][1] == first["history"][1]  # epoch 1 was not trained again


def test_folds_and_refit_cli(tmp_path, monkeypatch, capsys):
    """--folds 2 reports out-of-fold metrics from fold models; --refit retrains on training + validation."""
    from medm2t.cli import main

    monkeypatch.setenv("MEDM2T_CACHE_DIR", str(tmp_path / "cache"))
    data, ck = tmp_path / "synth", tmp_path / "ck"
    assert main(["synth", "--stays", "30", "--seed", "4", "--out", str(data), "--no-progress"]) == 0
    assert main(["train", "--data", f"synth:{data}", "--out", str(ck), "--folds", "2", "--refit", "--epochs", "1",
                 "--landmarks", "1", "--batch-size", "16", "--modalities", "static,labs,vitals_tok", "--quiet"]) == 0
    meta = json.loads((ck / "meta.json").read_text())
    cv = meta["metrics"]["cross_validation"]
    assert len(cv["per_fold"]) == 2 and cv["pooled_out_of_fold"]["mortality"]["n"] == 30
    info = meta["train_info"]
    assert info["refit"]["stays"] + info["refit"]["calibration_stays"] == 30 and "note" in meta["metrics"]["validation"]
    assert json.loads((ck / "config.json").read_text())["modalities"] == ["static", "labs", "vitals_tok"]
    assert not list(ck.glob("train_state*.pt"))
    assert main(["train", "--data", f"synth:{data}", "--out", str(ck), "--modalities", "labs,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_bad_data_spec_is_one_clear_line(command, tmp_path):
    """model/data.py raises its own DataSpecError (library code does not know the CLI); the commands
    show it as one line and exit 2."""
    import subprocess

    from tests.helpers.paths import MEDM2T
    from medm2t.settings import DEMO_CHECKPOINT

    argv = ["--data", str(tmp_path / "nowhere")]
    argv += ["--out", str(tmp_path / "out"), "--quiet"] if command == "train" else ["--checkpoint", str(DEMO_CHECKPOINT)]
    out = subprocess.run([MEDM2T, command, *argv], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr
    assert "medm2t: error: bad data spec" in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_prefixes_per_epoch_draws_k_of_each_stays_samples_afresh():
    from types import SimpleNamespace

    from model.stages import per_stay

    samples = [SimpleNamespace(stay_id=s, k=k) for s in range(20) for k in range(4)] + [SimpleNamespace(stay_id=99, k=0)]
    assert per_stay(samples, None, np.random.default_rng(0)) is samples
    rng = np.random.default_rng(0)
    draws = [per_stay(samples, 1, rng) for _ in range(3)]
    for d in draws:
        assert sorted(s.stay_id for s in d) == list(range(20)) + [99]  # one per stay, a stay with one kept
    assert len({tuple(s.k for s in d) for d in draws}) > 1  # a new draw each epoch
    two = per_stay(samples, 2, rng)
    assert all(sum(s.stay_id == i for s in two) == 2 for i in range(20))


def test_freeze_wide_fine_tunes_the_deep_part_only():
    from model.train import fit_one
    from model.train_options import TrainOptions

    cohort = tiny_cohort(32)
    tr = list(range(len(cohort.compact)))
    opts = dict(epochs=2, batch_size=16, patience=10, progress=False, use_cache=False, n_random=1)
    # no validation stays: every epoch is kept (nothing to stop early on)
    frozen, _, _, info = fit_one(cohort, tr, cohort, [], TrainOptions(freeze_wide=True, **opts), None, False)
    moved, _, _, _ = fit_one(cohort, tr, cohort, [], TrainOptions(freeze_wide=False, **opts), None, False)
    opts["epochs"] = 0
    refitted, _, _, _ = fit_one(cohort, tr, cohort, [], TrainOptions(**opts), None, False)  # the wide head alone
    assert info["best_epoch"] == 2, info["history"]
    wide = lambda m: m.fusion.heads.wide.weight  # noqa: E731
    assert torch.equal(wide(frozen), wide(refitted))      # the L-BFGS fit, untouched
    assert not torch.equal(wide(moved), wide(refitted))   # without the option fine-tuning moves it
    assert not torch.equal(frozen.fusion.heads.mortality.weight, refitted.fusion.heads.mortality.weight)
    assert frozen.fusion.heads.wide.weight.requires_grad  # given back to later stages


def test_cli_self_supervised_time_encoding_and_frozen_wide_head(tmp_path, monkeypatch):
    from medm2t.cli import main

    monkeypatch.setenv("MEDM2T_CACHE_DIR", str(tmp_path / "cache"))
    data, ck = tmp_path / "synth", tmp_path / "ck"
    assert main(["synth", "--stays", "24", "--seed", "3", "--out", str(data), "--no-progress"]) == 0
    assert main(["train", "--data", f"synth:{data}", "--out", str(ck), "--epochs", "1", "--ssl-epochs", "2",
                 "--time-encoding", "4", "--freeze-wide", "--landmarks", "1", "--batch-size", "16",
                 "--modalities", "static,labs,vitals_tok", "--quiet"]) == 0
    assert json.loads((ck / "config.json").read_text())["window_time_dim"] == 4
    info = json.loads((ck / "meta.json").read_text())["train_info"]
    ssl = info["self_supervised"]
    assert set(ssl["relative_error"]) == {"labs", "vitals_tok"} and all(len(v) == 2 for v in ssl["relative_error"].values())
    assert info["options"]["freeze_wide"] is True
    from model.checkpoint import load_checkpoint

    model, _, cfg, _ = load_checkpoint(ck)
    assert all(model.encoders[g].time_enc.dim == 4 for g in ("labs", "vitals_tok"))
    assert main(["train", "--data", f"synth:{data}", "--out", str(ck), "--time-encoding", "1"]) == 2
    assert main(["train", "--data", f"synth:{data}", "--out", str(ck), "--ssl-epochs", "-1"]) == 2
