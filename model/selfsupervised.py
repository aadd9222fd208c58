"""Self-supervised pre-training of the sparse encoders (labs, tokenised vitals): masked-item prediction.

The paper pre-trains each modality encoder on its own before fusion. This stage does so without labels:
in every sample some of the items that have data are hidden (all their events, their current value and
their per-item summary), and the encoder's pooled output has to predict, for each hidden item, its mean
and its current value rank (ranks are quantiles of the item's training values, model/sparse.py). To do
that the encoder must learn how items go together (creatinine from urea, lactate from blood pressure and
heart rate), which is the structure the supervised heads are meant to build on.

It reads inputs only, never targets, so it can use every stay the run has: the training stays and the
validation stays alike (issue 10: "masked value prediction on set-a + set-b inputs, without labels").
The prediction heads live here and are thrown away afterwards: the checkpoint keeps only the encoders.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch
from torch import nn

from model.batches import iterate, optimizer_step
from model.inputs import collate

log = logging.getLogger(__name__)

MASK_RATE = 0.25  # share of a sample's items (those with numeric data) hidden per step


def mask_items(sp: dict[str, torch.Tensor], hide: torch.Tensor, n_windows: int) -> dict[str, torch.Tensor]:
    """`sp` (a collated sparse group) without any event, current value or summary of the (sample, item)
    pairs where `hide` (B, I) is True."""
    sample = sp["seg"] // n_windows
    keep = ~hide[sample, sp["item"]]
    return {**sp, "val": sp["val"][keep], "item": sp["item"][keep], "seg": sp["seg"][keep],
            "last": torch.where(hide.unsqueeze(1), torch.zeros_like(sp["last"]), sp["last"])}


def item_targets(enc, sp: dict[str, torch.Tensor], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, I, 2) mean and current value rank of every item, centred on the median, and (B, I) whether the
    item has numeric data (only those can be targets)."""
    acc = enc.summary_accumulate(sp["val"], sp["item"], sp["seg"] // enc.n_windows, batch_size)
    count = acc[..., 0]
    mean = acc[..., 1] / count.clamp(min=1.0)
    current = enc.value_rank[sp["last"][:, -1]]
    has = (count > 0) & (current >= 0)
    return torch.stack([mean, current], dim=-1) - 0.5, has


def draw_hidden(has: torch.Tensor, rate: float, gen: torch.Generator) -> torch.Tensor:
    """(B, I) items to hide: each item with data with probability `rate`, at least one per sample that has any."""
    u = torch.rand(has.shape, generator=gen).to(has.device)
    hide = has & (u < rate)
    none = has.any(1) & ~hide.any(1)
    if none.any():  # hide the item with the smallest draw among those with data
        pick = torch.where(has, u, torch.full_like(u, 2.0)).argmin(1)
        hide[none, pick[none]] = True
    return hide


class MaskedItemHeads(nn.Module):
    """Per sparse group: pooled encoder output -> (mean, current) rank of every item."""

    def __init__(self, model, groups: Sequence[str]):
        super().__init__()
        self.heads = nn.ModuleDict({g: nn.Linear(model.encoders[g].d_out, 2 * model.encoders[g].n_items)
                                    for g in groups})

    def forward(self, g: str, pooled: torch.Tensor) -> torch.Tensor:
        return self.heads[g](pooled).view(pooled.shape[0], -1, 2)


def masked_item_loss(model, heads: MaskedItemHeads, batch, g: str, gen: torch.Generator,
                     rate: float = MASK_RATE) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(mean squared error of the hidden items' ranks, the same error of predicting the median), or
    (None, None) when no sample of the batch has numeric data in `g`."""
    enc, sp = model.encoders[g], batch.sparse[g]
    target, has = item_targets(enc, sp, batch.size)
    if not has.any():
        return None, None
    hide = draw_hidden(has, rate, gen)
    pooled = enc(mask_items(sp, hide, enc.n_windows), batch.tfeat, batch.elapsed_h)[0]
    err = (heads(g, pooled) - target)[hide]
    return err.pow(2).mean(), target[hide].pow(2).mean()


def pretrain_sparse(model, samples: Sequence, epochs: int, lr: float, weight_decay: float, batch_size: int,
                    device: str, seed: int, progress: bool = True) -> dict:
    """Masked-item pre-training of `model`'s sparse encoders, in place, on the inputs of `samples` (their
    targets are never read). Returns per group and epoch the squared error relative to predicting the
    median (1.0 = no better than the median, lower = the encoder has learnt something)."""
    from tqdm import tqdm

    if epochs <= 0:
        return {}
    groups = [g for g in model.sparse_groups if model.encoders[g].summary]
    if len(groups) < len(model.sparse_groups):  # the targets are the item summaries' ranks
        log.warning("self-supervised pre-training needs item summaries (ModelConfig.item_summary): skipped for %s",
                    ", ".join(sorted(set(model.sparse_groups) - set(groups))))
    if not groups or len(samples) < 2:
        return {}
    heads = MaskedItemHeads(model, groups).to(device)
    params = [p for g in groups for p in model.encoders[g].parameters()] + list(heads.parameters())
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng([seed, 31])
    history: dict[str, list[float]] = {g: [] for g in groups}
    model.train()
    for epoch in range(epochs):
        sums = {g: [0.0, 0.0] for g in groups}
        bar = tqdm(list(iterate(samples, batch_size, rng)), desc=f"self-supervised {epoch + 1}/{epochs}",
                   unit="batch", disable=not progress, leave=False)
        for chunk in bar:
            if len(chunk) < 2:
                continue
            batch = collate([s.inputs for s in chunk], model.cfg)  # inputs only: targets are never read
            batch = batch.to(device) if device != "cpu" else batch
            total = None
            for g in groups:
                loss, base = masked_item_loss(model, heads, batch, g, gen)
                if loss is None:
                    continue
                sums[g][0] += float(loss.detach())
                sums[g][1] += float(base)
                total = loss if total is None else total + loss
            if total is None:
                continue
            optimizer_step(optim, total, params)
        for g in groups:
            rel = round(sums[g][0] / sums[g][1], 4) if sums[g][1] else None  # None: no item with data
            history[g].append(rel)
            log.info("self-supervised epoch %d, %s: masked-item error %s of the median's", epoch + 1, g, rel)
    model.eval()
    return {"relative_error": history, "mask_rate": MASK_RATE, "samples": len(samples)}
