"""Evaluation metrics, computed the way the MedM2T paper does (so numbers are comparable) plus the
ones the paper leaves out.

Binary: `auroc`, `auprc_trapezoid` (sklearn `auc(recall, precision)`, the paper's AUPRC),
`average_precision` (the step-wise estimate, which is not optimistic like the trapezoid),
`brier`, `ece` (expected calibration error over 10 equal-width probability bins [0,0.1),...,[0.9,1]:
sum over bins of |mean predicted - observed rate| x bin share), `n`, `positives`.
Multiclass: one-vs-rest AUROC/AUPRC per class, macro-averaged over classes that occur (as the paper).
Regression: `mae`, `mse` in days.

A metric that cannot be computed (e.g. AUROC with one class present) is None, never NaN, so the
result is valid JSON.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

ECE_BINS = 10


def _clean(y_true: Sequence, y_score: Sequence) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.float64).reshape(-1)
    p = np.asarray(y_score, dtype=np.float64).reshape(-1)
    if y.shape != p.shape:
        raise ValueError(f"labels ({y.shape[0]}) and scores ({p.shape[0]}) differ in length")
    keep = np.isfinite(y) & np.isfinite(p)
    return y[keep], p[keep]


def reliability(y_true: Sequence, prob: Sequence, bins: int = ECE_BINS) -> list[dict]:
    """The non-empty bins of `bins` equal-width bins on [0, 1] (the last includes 1): range, count, mean
    predicted probability and observed rate. What a reliability diagram plots."""
    y, p = _clean(y_true, prob)
    idx = np.minimum((np.clip(p, 0.0, 1.0) * bins).astype(int), bins - 1)
    rows = []
    for b in range(bins):
        sel = idx == b
        if sel.any():
            rows.append({"low": b / bins, "high": (b + 1) / bins, "n": int(sel.sum()),
                         "mean_predicted": float(p[sel].mean()), "observed": float(y[sel].mean())})
    return rows


def ece(y_true: Sequence, prob: Sequence, bins: int = ECE_BINS) -> float | None:
    """Expected calibration error: the count-weighted mean |mean predicted - observed| over the reliability bins."""
    rows = reliability(y_true, prob, bins)
    n = sum(r["n"] for r in rows)
    if n == 0:
        return None
    return float(sum(r["n"] * abs(r["mean_predicted"] - r["observed"]) for r in rows) / n)


def binary_metrics(y_true: Sequence, prob: Sequence) -> dict:
    """AUROC, trapezoidal AUPRC, average precision, Brier, ECE, n, positives for one binary task."""
    from sklearn.metrics import auc, average_precision_score, precision_recall_curve, roc_auc_score

    y, p = _clean(y_true, prob)
    out: dict = {"n": int(y.size), "positives": int(y.sum())}
    both = y.size > 0 and 0 < y.sum() < y.size
    if both:
        precision, recall, _ = precision_recall_curve(y, p)
        out["auroc"] = float(roc_auc_score(y, p))
        out["auprc_trapezoid"] = float(auc(recall, precision))
        out["average_precision"] = float(average_precision_score(y, p))
    else:
        out["auroc"] = out["auprc_trapezoid"] = out["average_precision"] = None
    out["brier"] = float(np.mean((p - y) ** 2)) if y.size else None
    out["ece"] = ece(y, p)
    return out


def multiclass_metrics(y_true: Sequence[int], prob: np.ndarray, classes: Sequence[str]) -> dict:
    """One-vs-rest metrics per class plus their macro average over classes that have both outcomes."""
    y = np.asarray(y_true, dtype=np.int64).reshape(-1)
    P = np.asarray(prob, dtype=np.float64).reshape(len(y), len(classes)) if len(y) else np.zeros((0, len(classes)))
    per_class = {c: binary_metrics((y == k).astype(float), P[:, k]) for k, c in enumerate(classes)}
    out: dict = {"n": int(len(y)), "per_class": per_class}
    for key in ("auroc", "auprc_trapezoid", "average_precision"):
        vals = [m[key] for m in per_class.values() if m[key] is not None]
        out[f"macro_{key}"] = float(np.mean(vals)) if vals else None
    out["accuracy"] = float((P.argmax(1) == y).mean()) if len(y) else None
    return out


def regression_metrics(y_true: Sequence, y_pred: Sequence) -> dict:
    y, p = _clean(y_true, y_pred)
    if y.size == 0:
        return {"n": 0, "mae": None, "mse": None}
    err = p - y
    return {"n": int(y.size), "mae": float(np.abs(err).mean()), "mse": float((err**2).mean())}
