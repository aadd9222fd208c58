"""The training stages that fit one model: batch-norm recalibration, supervised pre-training of each
encoder, self-supervised pre-training, and end-to-end fine-tuning with early stopping (the order and the
whole runs are model/train.py's)."""
from __future__ import annotations

import copy
import logging
import math
import time

import numpy as np

from model.batches import iterate, make_batch, mean_loss, multitask_loss, optimizer_step
from model.train_options import TrainOptions, option

log = logging.getLogger(__name__)


# ---- batch-norm statistics ----------------------------------------------------------------------


def recalibrate_batchnorm(model, samples, batch_size: int, device: str, seed: int, max_samples: int = 2048) -> None:
    """Re-estimate every BatchNorm's running statistics as a plain average over up to `max_samples`
    training samples with the weights fixed ("precise BN"). With the default momentum the running
    statistics lag the weights; on PhysioNet 2012 that made eval-mode losses worse than train-mode ones
    on the very same training samples (mortality BCE 0.38 vs 0.33 after one epoch; 0.33 once recalibrated)."""
    import torch

    bns = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns or not samples:
        return
    rng = np.random.default_rng(seed)
    subset = [samples[i] for i in rng.permutation(len(samples))[:max_samples]]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for chunk in iterate(subset, batch_size, None):
            if len(chunk) >= 2:
                model(make_batch(chunk, device, model.cfg)[0])
    for m, mom in zip(bns, saved):
        m.momentum = mom
    model.eval()


# ---- stages -------------------------------------------------------------------------------------


def _has_modality(sample, name: str) -> bool:
    present = getattr(sample.inputs, "present", None)
    if present is None:
        return True
    return bool(present.get(name, True)) if isinstance(present, dict) else name in present


def _pretrain_loss(model, name, batch, targets):
    return multitask_loss(model.pretrain_forward(name, batch), targets)


def pretrain(model, samples, opts: TrainOptions, state: dict, save_state) -> None:
    """Stage 1: each encoder with its own pre-training head, on the samples that have its modality."""
    import torch
    from tqdm import tqdm

    epochs = option(opts, "pretrain_epochs")
    done = state.setdefault("pretrained", [])
    for name in model.modalities:
        if name in done:
            continue
        subset = [s for s in samples if _has_modality(s, name)]
        if len(subset) < 2 or epochs <= 0:
            log.info("pre-training %s skipped (%s)", name,
                     "pre-training epochs = 0" if epochs <= 0 else f"{len(subset)} samples with it")
            done.append(name)
            continue
        params = list(model.encoders[name].parameters()) + list(model.pretrain_heads[name].parameters())
        optim = torch.optim.AdamW(params, lr=option(opts, "pretrain_lr"), weight_decay=option(opts, "weight_decay"))
        rng = np.random.default_rng([opts.seed, len(done)])
        model.train()
        for epoch in range(epochs):
            losses = []
            bar = tqdm(list(iterate(subset, opts.batch_size, rng)), desc=f"pre-train {name} {epoch + 1}/{epochs}",
                       unit="batch", disable=not opts.progress, leave=False)
            for chunk in bar:
                if len(chunk) < 2:  # BatchNorm needs two samples in training mode
                    continue
                batch, targets = make_batch(chunk, opts.device, model.cfg)
                loss, _ = _pretrain_loss(model, name, batch, targets)
                if loss is None:
                    continue
                losses.append(optimizer_step(optim, loss, params))
                bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            log.info("pre-train %s epoch %d: loss %.4f", name, epoch + 1, np.mean(losses) if losses else float("nan"))
        done.append(name)
        save_state()


def self_supervised(model, samples, opts: TrainOptions) -> dict:
    """Stage 0 (off unless ssl_epochs > 0): masked-item pre-training of the sparse encoders (model/selfsupervised.py)."""
    from model.selfsupervised import pretrain_sparse

    return pretrain_sparse(model, samples, option(opts, "ssl_epochs"), option(opts, "pretrain_lr"),
                           option(opts, "weight_decay"), opts.batch_size, opts.device, opts.seed, opts.progress)


def per_stay(samples: list, k: int | None, rng: np.random.Generator) -> list:
    """At most `k` of each stay's samples, drawn afresh each call (None: all of them). Fewer correlated
    prefixes of one stay per epoch regularise the deep part (issue 10's "one prefix per stay per epoch")."""
    if k is None:
        return samples
    by_stay: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        by_stay.setdefault(s.stay_id, []).append(i)
    keep = [i for idx in by_stay.values() for i in (idx if len(idx) <= k else rng.choice(idx, k, replace=False))]
    return [samples[i] for i in sorted(keep)]


def finetune(model, train_samples, val_samples, opts: TrainOptions, state: dict, save_state,
             fixed_epochs: int | None = None) -> dict:
    """Stage 2: end to end with early stopping on validation loss; restores the best epoch's weights.
    `fixed_epochs`: train exactly that many epochs with no validation (refit)."""
    import torch

    max_epochs = option(opts, "epochs") if fixed_epochs is None else fixed_epochs
    wide = model.fusion.heads.wide
    if wide is not None:
        wide.requires_grad_(not option(opts, "freeze_wide"))
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=option(opts, "lr"), weight_decay=option(opts, "weight_decay"))
    budget = option(opts, "max_minutes")
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(optim, T_max=max(1, max_epochs))
    ft = state.setdefault("finetune", {"epoch": 0, "best_loss": math.inf, "best_epoch": 0, "bad": 0, "history": []})
    if "optim" in ft:
        optim.load_state_dict(ft["optim"])
        sched.load_state_dict(ft["sched"])
    if ft["epoch"] == 0 and val_samples and fixed_epochs is None:
        # epoch 0 (the pre-trained / wide-fitted model) competes too: fine-tuning must earn its keep
        ft["best_loss"] = mean_loss(model, val_samples, 256, opts.device)
        ft["best_state"] = copy.deepcopy(model.state_dict())
        ft["history"].append({"epoch": 0, "train_loss": None, "val_loss": ft["best_loss"]})
        log.info("before fine-tuning: validation loss %.4f", ft["best_loss"])
    while ft["epoch"] < max_epochs:
        epoch, started = ft["epoch"], time.monotonic()
        train_loss = _finetune_epoch(model, train_samples, opts, optim, params, epoch, max_epochs)
        sched.step()
        recalibrate_batchnorm(model, train_samples, max(opts.batch_size, 128), opts.device, opts.seed + epoch)
        val_loss = mean_loss(model, val_samples, 256, opts.device) if (val_samples and fixed_epochs is None) else None
        ft["epoch"] = epoch + 1
        ft["history"].append({"epoch": epoch + 1, "train_loss": train_loss, "val_loss": val_loss})
        log.info("fine-tune epoch %d: train loss %.4f, validation loss %s", epoch + 1, train_loss,
                 "-" if val_loss is None else f"{val_loss:.4f}")
        if val_loss is None or val_loss < ft["best_loss"] - 1e-4:
            ft["best_loss"] = val_loss if val_loss is not None else ft["best_loss"]
            ft["best_epoch"] = epoch + 1
            ft["best_state"] = copy.deepcopy(model.state_dict())
            ft["bad"] = 0
        else:
            ft["bad"] += 1
        ft["optim"], ft["sched"] = optim.state_dict(), sched.state_dict()
        ft["seconds"] = ft.get("seconds", 0.0) + time.monotonic() - started  # across resumed runs too
        save_state()
        if ft["bad"] >= opts.patience:
            log.info("early stopping after epoch %d (best %d)", epoch + 1, ft["best_epoch"])
            break
        if budget and ft["seconds"] / 60 * (ft["epoch"] + 1) / ft["epoch"] > budget:
            log.info("time budget of %.0f min would be exceeded by another epoch: stopping after epoch %d",
                     budget, epoch + 1)
            break
    if "best_state" in ft:
        model.load_state_dict(ft["best_state"])
    if wide is not None:
        wide.requires_grad_(True)
    return {"epochs_run": ft["epoch"], "best_epoch": ft["best_epoch"],
            "best_val_loss": None if math.isinf(ft["best_loss"]) else ft["best_loss"], "history": ft["history"]}


def _finetune_epoch(model, train_samples, opts: TrainOptions, optim, params, epoch: int, max_epochs: int) -> float:
    """One fine-tuning epoch over (some of) each stay's prefixes; returns its mean training loss."""
    from tqdm import tqdm

    rng = np.random.default_rng([opts.seed, 1000 + epoch])
    model.train()
    losses = []
    seen = per_stay(train_samples, opts.prefixes_per_epoch, rng)
    bar = tqdm(list(iterate(seen, opts.batch_size, rng)), desc=f"fine-tune {epoch + 1}/{max_epochs}",
               unit="batch", disable=not opts.progress, leave=False)
    for chunk in bar:
        if len(chunk) < 2:
            continue
        batch, targets = make_batch(chunk, opts.device, model.cfg)
        loss, _ = multitask_loss(model(batch), targets)
        if loss is None:
            continue
        losses.append(optimizer_step(optim, loss, params))
        bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
    return float(np.mean(losses)) if losses else math.inf
