"""Post-hoc calibration (model/calibration.py): pure logic on known miscalibrated scores, and the same numbers
through the model's own output path (model.inference.output_arrays) that the stream and evaluation use."""
from __future__ import annotations

import numpy as np
import pytest

from model.calibration import Calibration, fit_calibration, short_data_name
from model.metrics import binary_metrics, ece, reliability


def _overconfident(n=6000, seed=0, factor=2.5):
    """Labels drawn from true probabilities; scores whose logits are `factor` times too large."""
    rng = np.random.default_rng(seed)
    z = rng.normal(-2.0, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    cls = rng.integers(0, 4, n)
    cvd_logits = np.eye(4)[cls] * 1.0 + rng.normal(0, 1, (n, 4))
    cvd = np.exp(cvd_logits * factor)
    return {"mortality": 1 / (1 + np.exp(-z * factor)), "y_mortality": y, "los_remaining": np.full(n, 2.0),
            "y_los_remaining": np.full(n, 3.0), "cvd_90d": cvd / cvd.sum(1, keepdims=True), "y_cvd_90d": cls,
            "stay_id": np.arange(n)}


def test_temperature_recovers_the_overconfidence_and_keeps_the_ranking():
    pred = _overconfident()
    cal = fit_calibration(pred, "test data")
    mort = cal.tasks["mortality"]
    assert mort.temperature == mort.fitted_temperature == pytest.approx(2.5, rel=0.1) and mort.p_value < 1e-6
    assert mort.ece_after < 0.02 < mort.ece_before
    assert cal.tasks["cvd_90d"].temperature > 1.5
    assert cal.los_mae_days == pytest.approx(1.0)
    after = cal.apply(pred)
    assert binary_metrics(pred["y_mortality"], after["mortality"])["auroc"] == pytest.approx(
        binary_metrics(pred["y_mortality"], pred["mortality"])["auroc"], abs=1e-9)
    assert np.allclose(after["cvd_90d"].sum(1), 1.0)
    assert (after["cvd_90d"].argmax(1) == pred["cvd_90d"].argmax(1)).all()
    assert "calibrated (temperature 2." in cal.label("mortality") and "test data" in cal.label("mortality")
    assert "MAE 1.00 d" in cal.label("los_remaining")


def test_a_temperature_that_is_not_significant_is_not_applied():
    pred = _overconfident(3000, seed=1, factor=1.0)  # calibrated already
    pred["stay_id"] = np.arange(3000) // 10          # ten landmarks per stay: 300 stays of evidence
    mort = fit_calibration(pred, "d").tasks["mortality"]
    assert mort.fitted_temperature != 1.0 and mort.p_value > 0.05 and mort.temperature == 1.0
    assert mort.ece_after == mort.ece_before
    assert "none needed" in fit_calibration(pred, "d").label("mortality")
    pred["stay_id"] = np.arange(3000)                # the same scores as 3,000 independent stays
    assert fit_calibration(pred, "d").tasks["mortality"].p_value < mort.p_value


def test_a_task_with_one_outcome_only_is_left_uncalibrated():
    pred = _overconfident(200)
    pred["y_mortality"] = np.zeros(200)
    pred["y_cvd_90d"] = np.full(200, -1)
    cal = fit_calibration(pred, "x")
    assert cal.tasks == {} and cal.label("mortality") is None
    assert np.array_equal(cal.apply(pred)["mortality"], pred["mortality"])


def test_round_trip_and_older_checkpoints():
    cal = fit_calibration(_overconfident(500), "d")
    again = Calibration.from_dict(cal.to_dict())
    assert again == cal and again.digest() == cal.digest()
    assert Calibration.from_dict(None) is None and Calibration.from_dict("uncalibrated") is None


def test_the_model_output_path_applies_the_same_temperatures():
    import torch

    from model.inference import output_arrays

    pred = _overconfident(400, seed=3)
    cal = fit_calibration(pred, "d")
    logits = {"mortality": torch.tensor(np.log(pred["mortality"] / (1 - pred["mortality"])), dtype=torch.float32),
              "los_remaining": torch.zeros(400), "cvd_90d": torch.tensor(np.log(pred["cvd_90d"]), dtype=torch.float32)}
    got, want = output_arrays(logits, cal), cal.apply(pred)
    assert np.allclose(got["mortality"], want["mortality"], atol=1e-5)
    assert np.allclose(got["cvd_90d"], want["cvd_90d"], atol=1e-5)
    assert np.allclose(output_arrays(logits)["mortality"], pred["mortality"], atol=1e-5)


def test_reliability_bins_and_ece_agree():
    y = np.array([0, 0, 1, 1, 1, 0], dtype=float)
    p = np.array([0.05, 0.15, 0.85, 0.95, 1.0, 0.9])
    rows = reliability(y, p)
    assert [(r["low"], r["n"]) for r in rows] == [(0.0, 1), (0.1, 1), (0.8, 1), (0.9, 3)]
    assert rows[-1]["observed"] == pytest.approx(2 / 3) and rows[-1]["mean_predicted"] == pytest.approx(0.95)
    want = (0.05 + 0.15 + 0.15 + 3 * abs(0.95 - 2 / 3)) / 6
    assert ece(y, p) == pytest.approx(want)


def test_short_data_names():
    assert short_data_name("physionet2012:/x/set-b.tar.gz:/x/Outcomes-b.txt") == "set-b.tar.gz"
    assert short_data_name("synth:/tmp/s300") == "synth s300"
    assert short_data_name("mimic:/d/mimic-iv-demo,ecg=/e") == "mimic mimic-iv-demo"
