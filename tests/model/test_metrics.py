"""Pure-logic tests of model/metrics.py against independent computations."""
from __future__ import annotations

import json

import numpy as np
import pytest

from model.metrics import binary_metrics, ece, multiclass_metrics, regression_metrics


def _rank_auroc(y, p):
    """AUROC as the probability a random positive outranks a random negative (ties count half)."""
    pos, neg = p[y == 1], p[y == 0]
    diff = pos[:, None] - neg[None, :]
    return ((diff > 0).sum() + 0.5 * (diff == 0).sum()) / (len(pos) * len(neg))


def test_binary_metrics_match_independent_definitions():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300).astype(float)
    p = np.clip(0.3 * y + rng.random(300) * 0.7, 0, 1)
    m = binary_metrics(y, p)
    assert m["n"] == 300 and m["positives"] == int(y.sum())
    assert m["auroc"] == pytest.approx(_rank_auroc(y, p))
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))
    # step-wise AP: sum over positives of precision at that positive's rank / positives (no ties here)
    order = np.argsort(-p)
    hits = y[order]
    ap = np.sum(np.cumsum(hits) / np.arange(1, len(y) + 1) * hits) / hits.sum()
    assert m["average_precision"] == pytest.approx(ap)
    assert 0 < m["auprc_trapezoid"] <= 1
    json.dumps(m)  # valid JSON, no NaN objects


def test_perfect_and_inverted_ranking():
    y = np.array([0, 0, 1, 1])
    assert binary_metrics(y, [0.1, 0.2, 0.8, 0.9])["auroc"] == 1.0
    assert binary_metrics(y, [0.9, 0.8, 0.2, 0.1])["auroc"] == 0.0


def test_ece_equal_width_bins_by_hand():
    # bin [0.1,0.2): p=0.15 twice, observed 1/2 -> |0.15-0.5| * 2/4 ; bin [0.9,1]: p=1.0 and 0.9, observed 1 -> |0.95-1| * 2/4
    y = [0, 1, 1, 1]
    p = [0.15, 0.15, 1.0, 0.9]
    assert ece(y, p) == pytest.approx(0.35 * 0.5 + 0.05 * 0.5)
    assert ece([1, 0], [1.0, 0.0]) == 0.0


def test_single_class_gives_none_not_nan():
    m = binary_metrics([0, 0, 0], [0.1, 0.2, 0.3])
    assert m["auroc"] is None and m["average_precision"] is None
    assert m["positives"] == 0 and m["brier"] == pytest.approx(np.mean(np.array([0.1, 0.2, 0.3]) ** 2))
    assert "NaN" not in json.dumps(m)


def test_non_finite_rows_are_dropped_and_length_mismatch_is_an_error():
    m = binary_metrics([0, 1, np.nan, 1], [0.2, 0.9, 0.5, np.nan])
    assert m["n"] == 2
    with pytest.raises(ValueError, match="differ in length"):
        binary_metrics([0, 1], [0.5])


def test_regression_and_multiclass():
    r = regression_metrics([1.0, 2.0, 4.0], [2.0, 2.0, 1.0])
    assert r["mae"] == pytest.approx((1 + 0 + 3) / 3) and r["mse"] == pytest.approx((1 + 0 + 9) / 3)
    assert regression_metrics([], [])["mae"] is None
    y = np.array([0, 1, 2, 3, 0, 1])
    P = np.eye(4)[y] * 0.7 + 0.075
    m = multiclass_metrics(y, P, ("none", "chd", "stroke", "hf"))
    assert m["macro_auroc"] == 1.0 and m["accuracy"] == 1.0
    assert set(m["per_class"]) == {"none", "chd", "stroke", "hf"}
