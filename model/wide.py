"""The wide head, fitted before fine-tuning: a regularised linear model from the static vector and the
per-item summaries (count, mean/min/max and current value rank of every lab and vital) to every task.

Why: on PhysioNet 2012 a logistic regression on exactly these inputs does about as well on set-b as the
whole network, while the deep network alone overfits within two epochs (the figures, dated, are in
docs/benchmarks.md). Fitting the wide part first, as a
convex problem (full-batch L-BFGS, L2 strength chosen on the validation loss), and starting fine-tuning
from it (the deep heads' last layers start at zero) makes the deep part a correction that early stopping
keeps only where it helps on validation data.
"""
from __future__ import annotations

import logging
from typing import Sequence

import torch

from medm2t.vocabulary import CVD_90D, LOS_REMAINING, MORTALITY
from model.batches import iterate, make_batch, multitask_loss

log = logging.getLogger(__name__)

L2_GRID = (3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
DEFAULT_L2 = 1e-3


@torch.no_grad()
def wide_matrix(model, samples: Sequence, device: str = "cpu", batch_size: int = 512):
    """(wide inputs (N, D), targets) of `samples`, as tensors on `device`."""
    xs, ts = [], []
    for chunk in iterate(samples, batch_size, None):
        batch, targets = make_batch(chunk, device, model.cfg)
        xs.append(model.wide_features_of(batch))
        ts.append(targets)
    return torch.cat(xs), {k: torch.cat([t[k] for t in ts]) for k in ts[0]}


def _outputs(raw: torch.Tensor) -> dict[str, torch.Tensor]:
    return {MORTALITY: raw[:, 0], LOS_REMAINING: torch.nn.functional.softplus(raw[:, 1]), CVD_90D: raw[:, 2:]}


def _fit(x: torch.Tensor, targets: dict, l2: float, max_iter: int = 200) -> torch.nn.Linear:

    lin = torch.nn.Linear(x.shape[1], 6).to(x.device)
    torch.nn.init.zeros_(lin.weight)
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss, _ = multitask_loss(_outputs(lin(x)), targets)
        loss = loss + l2 * lin.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return lin


def fit_wide_head(model, train_samples: Sequence, val_samples: Sequence, device: str = "cpu",
                  l2: float | None = None) -> dict:
    """Fit `model`'s wide head in place (L2 strength `l2`, else chosen on `val_samples`, else DEFAULT_L2)
    and zero the deep heads' output layers; returns the L2 strength and the validation losses."""

    head = model.fusion.heads.wide
    if head is None or not train_samples:
        return {}
    x, t = wide_matrix(model, train_samples, device)
    if l2 is not None or not val_samples:
        chosen, losses = (DEFAULT_L2 if l2 is None else l2), {}
        best = _fit(x, t, chosen)
    else:
        xv, tv = wide_matrix(model, val_samples, device)
        losses, fits = {}, {}
        for l2 in L2_GRID:
            fits[l2] = _fit(x, t, l2)
            with torch.no_grad():
                losses[l2] = float(multitask_loss(_outputs(fits[l2](xv)), tv)[0])
        chosen = min(losses, key=losses.get)
        best = fits[chosen]
    heads = model.fusion.heads
    with torch.no_grad():  # the model becomes the wide part alone; fine-tuning adds the deep part from zero
        for lin in (heads.mortality, heads.los, heads.cvd):
            lin.weight.zero_()
            lin.bias.zero_()
        head.weight.copy_(best.weight)
        head.bias.copy_(best.bias)
    log.info("wide head fitted: L2 %.0e (validation loss per L2: %s)", chosen,
             ", ".join(f"{k:.0e}: {v:.4f}" for k, v in losses.items()) or "-")
    return {"l2": chosen, "val_loss_by_l2": {str(k): v for k, v in losses.items()}}
