"""Batches, the multi-task loss and eval-mode predictions over model.data samples: what training
(model/stages.py), the wide head (model/wide.py) and evaluation (model/evaluate.py) share.

Loss (per task, masked to samples that have the label; the tasks' losses are summed with TASK_WEIGHTS):
- mortality: binary cross-entropy on the logit;
- los_remaining: Huber (delta 1) on log1p(days). LOS is heavily right-skewed; MSE on raw days (the
  paper's choice) is dominated by a few very long stays;
- cvd_90d: cross-entropy over the 4 classes.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from medm2t.vocabulary import CVD_90D, LOS_REMAINING, MORTALITY

TASK_WEIGHTS = {MORTALITY: 1.0, LOS_REMAINING: 0.5, CVD_90D: 1.0}


def make_batch(samples, device, cfg):
    """Collate inputs and targets of `samples` and move them to `device`."""
    from model.data import target_tensors
    from model.inputs import collate

    batch = collate([s.inputs for s in samples], cfg)
    if device != "cpu" and hasattr(batch, "to"):
        batch = batch.to(device)
    targets = {k: v.to(device) for k, v in target_tensors(samples).items()} if device != "cpu" else target_tensors(samples)
    return batch, targets


def iterate(samples: Sequence, batch_size: int, rng: np.random.Generator | None):
    order = np.arange(len(samples)) if rng is None else rng.permutation(len(samples))
    for start in range(0, len(samples), batch_size):
        yield [samples[i] for i in order[start:start + batch_size]]


def multitask_loss(out: dict, targets: dict, weights: dict = TASK_WEIGHTS):
    """Sum of the weighted per-task losses over the samples that have each label; (loss, {task: value})."""
    import torch
    import torch.nn.functional as F

    parts = {}
    m = targets["mask_mortality"]
    if m.any() and MORTALITY in out:
        parts[MORTALITY] = F.binary_cross_entropy_with_logits(out[MORTALITY][m].float(), targets[MORTALITY][m])
    m = targets["mask_los_remaining"]
    if m.any() and LOS_REMAINING in out:
        pred = torch.log1p(out[LOS_REMAINING][m].float().clamp_min(0))
        parts[LOS_REMAINING] = F.huber_loss(pred, torch.log1p(targets[LOS_REMAINING][m]), delta=1.0)
    m = targets["mask_cvd_90d"]
    if m.any() and CVD_90D in out:
        parts[CVD_90D] = F.cross_entropy(out[CVD_90D][m].float(), targets[CVD_90D][m])
    if not parts:
        return None, {}
    total = sum(weights[k] * v for k, v in parts.items())
    return total, {k: float(v.detach()) for k, v in parts.items()}


def optimizer_step(optim, loss, params, max_norm: float = 5.0) -> float:
    """One step of every training loop here: backward, gradient norm clipped at `max_norm`, update; the loss."""
    import torch

    optim.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, max_norm)
    optim.step()
    return float(loss.detach())


def predict(model, samples: Sequence, batch_size: int = 256, device: str = "cpu", calibration=None) -> dict:
    """Eval-mode predictions: mortality probability, los_remaining days, cvd_90d class probabilities
    (calibrated when a model.calibration.Calibration is given)."""
    import torch

    from model.inference import output_arrays

    if not samples:
        return {MORTALITY: np.zeros(0), LOS_REMAINING: np.zeros(0), CVD_90D: np.zeros((0, 4))}
    model.eval()
    parts = []
    with torch.inference_mode():
        for chunk in iterate(samples, batch_size, None):
            parts.append(output_arrays(model(make_batch(chunk, device, model.cfg)[0]), calibration))
    return {task: np.concatenate([p[task] for p in parts]) for task in parts[0]}


def mean_loss(model, samples, batch_size: int, device: str) -> float:
    import torch

    model.eval()
    total, weight = 0.0, 0
    with torch.inference_mode():
        for chunk in iterate(samples, batch_size, None):
            batch, targets = make_batch(chunk, device, model.cfg)
            loss, _ = multitask_loss(model(batch), targets)
            if loss is not None:
                total += float(loss) * len(chunk)
                weight += len(chunk)
    return total / weight if weight else math.inf
