"""Training: supervised pre-training of each modality encoder, then end-to-end fine-tuning.

Stages (all on landmark prefixes, see model/landmarks.py):
0. self-supervised (off by default; `ssl_epochs > 0`): masked-item pre-training of the sparse encoders on
   the inputs of the training and validation stays, without labels (model/selfsupervised.py).
1. pre-train: for every modality, its encoder + its pre-training head on the multi-task loss, using
   only samples in which that modality is present (as the paper's unimodal stage, without B3/B4).
   Off by default in the small preset (see PRESET_DEFAULTS); `pretrain_epochs > 0` turns it on.
2. wide head (with `wide_head`, model/wide.py): a linear model on static inputs and per-item summaries,
   fitted by L-BFGS with its L2 strength chosen on the validation loss; the deep heads then start at 0.
3. fine-tune: the whole network end to end, early stopping on the validation loss with the best
   epoch's weights restored ("epoch 0", the model before fine-tuning, competes too).
4. refit (preset default: small on): a fresh model on training + half of the validation subjects, with
   the chosen L2 strength and number of epochs.
5. calibration (model/calibration.py): per-task temperatures fitted on the final model's predictions for
   validation stays it did not train on (the other half with refit, all of them without), stored in the
   checkpoint.

Loss: the multi-task loss of model/batches.py.

Folds: `folds > 1` runs GroupKFold by subject; every fold builds its own featurizer, pre-trains its
own encoders and fine-tunes on its own training split, so no fold ever sees its test stays (B3 fix).
Reported metrics are pooled out of fold and mean +/- SD over folds; the saved model is then trained on
all of the data.

Resumable: after every epoch the stage, epoch, weights, optimizer, best weights and RNG state go to
OUT/train_state.pt; `resume=True` continues from there.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from model.batches import iterate, make_batch, mean_loss, multitask_loss, optimizer_step
from model.calibration import short_data_name
from model.checkpoint import HELD_OUT_OF_REFIT
from model.evaluate import evaluate_model, metrics_from_predictions
from model.wide import fit_wide_head

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    preset: str = "small"
    seed: int = 0
    epochs: int | None = None          # fine-tuning epochs (max, early stopping may end sooner)
    pretrain_epochs: int | None = None
    ssl_epochs: int | None = None      # self-supervised masked-item pre-training of the sparse encoders
    window_time_dim: int | None = None  # ModelConfig.window_time_dim (None: the preset's)
    batch_size: int = 128
    lr: float | None = None
    pretrain_lr: float | None = None
    weight_decay: float | None = None
    patience: int = 2
    n_random: int = 3                  # random landmarks per stay, besides end-of-data
    freeze_wide: bool | None = None    # fine-tuning leaves the fitted wide head as it is (the deep part is a residual)
    prefixes_per_epoch: int | None = None  # fine-tuning sees this many of each stay's prefixes per epoch (None: all)
    val_fraction: float = 0.15         # when no --val spec is given
    refit: bool | None = None          # after early stopping, retrain on train+val for the best epoch count
    modalities: tuple[str, ...] | None = None  # None: default_modalities(training cohort)
    device: str = "cpu"
    use_cache: bool = True
    progress: bool = True
    max_minutes: float | None = None   # wall-clock budget for fine-tuning (preset default); keeps the best epoch
    extra: dict = field(default_factory=dict)


# small: tuned on PhysioNet 2012 (train set-a, validate set-b) to fit 30 min on 2 CPU cores. The model
# overfits within 2-3 epochs there (4 correlated landmarks per stay), hence the strong weight decay, and
# pre-training is off: its ~7 min are better spent on fine-tuning (`--pretrain-epochs N` turns it on).
PRESET_DEFAULTS = {
    "small": {"epochs": 6, "pretrain_epochs": 0, "ssl_epochs": 0, "freeze_wide": False, "lr": 1e-3, "pretrain_lr": 2e-3,
              "weight_decay": 0.05, "max_minutes": 20.0, "refit": True},
    "paper": {"epochs": 20, "pretrain_epochs": 5, "ssl_epochs": 0, "freeze_wide": False, "lr": 5e-5, "pretrain_lr": 1e-3,
              "weight_decay": 1e-4, "max_minutes": None, "refit": False},
}


def _opt(opts: TrainOptions, name: str):
    value = getattr(opts, name)
    return PRESET_DEFAULTS.get(opts.preset, PRESET_DEFAULTS["small"])[name] if value is None else value


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

    epochs = _opt(opts, "pretrain_epochs")
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
        optim = torch.optim.AdamW(params, lr=_opt(opts, "pretrain_lr"), weight_decay=_opt(opts, "weight_decay"))
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

    return pretrain_sparse(model, samples, _opt(opts, "ssl_epochs"), _opt(opts, "pretrain_lr"),
                           _opt(opts, "weight_decay"), opts.batch_size, opts.device, opts.seed, opts.progress)


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
    from tqdm import tqdm

    max_epochs = _opt(opts, "epochs") if fixed_epochs is None else fixed_epochs
    wide = model.fusion.heads.wide
    if wide is not None:
        wide.requires_grad_(not _opt(opts, "freeze_wide"))
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=_opt(opts, "lr"), weight_decay=_opt(opts, "weight_decay"))
    budget = _opt(opts, "max_minutes")
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
        sched.step()
        recalibrate_batchnorm(model, train_samples, max(opts.batch_size, 128), opts.device, opts.seed + epoch)
        train_loss = float(np.mean(losses)) if losses else math.inf
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


# ---- whole runs ---------------------------------------------------------------------------------


def default_modalities(cohort, indices: Sequence[int]) -> tuple[str, ...]:
    """Every modality the training stays have, except dense vitals where the source says its vitals are
    too sparse for them (PhysioNet 2012 charts about hourly: a 6-minute grid would be mostly carried-forward
    values, the same vitals already arrive as tokens, and the dense encoder would cost ~90 % of the
    training compute; the benchmark protocol is the sparse encoders plus static inputs)."""
    from model.config import MODALITIES

    mods = list(MODALITIES)
    if not any(cohort.compact[i].ecgs for i in indices):
        mods.remove("ecg")
    if not cohort.dense_vitals:
        mods.remove("vitals")
    log.info("modalities: %s", ", ".join(mods))
    return tuple(mods)


def build_model(cfg, featurizer, seed: int):
    import torch

    from model.network import MedM2T

    torch.manual_seed(seed)
    return MedM2T(cfg, featurizer.spec())


def fit_one(cohort, train_idx, val_cohort, val_idx, opts: TrainOptions, state_path: Path | None, resume: bool):
    """Fit a featurizer and a model on `train_idx` stays of `cohort`, early-stopping on `val_idx` stays of
    `val_cohort`. Returns (model, featurizer, cfg, info)."""
    import torch

    from model.config import ModelConfig
    from model.data import training_samples
    from model.features import Featurizer

    cfg = ModelConfig.from_preset(opts.preset)
    cfg.modalities = tuple(opts.modalities or default_modalities(cohort, train_idx))
    if opts.window_time_dim is not None:
        cfg.window_time_dim = opts.window_time_dim
    state: dict = {}
    if resume and state_path is not None and state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        log.info("resuming from %s (pre-trained: %s, fine-tune epoch %d)", state_path,
                 state.get("pretrained"), state.get("finetune", {}).get("epoch", 0))
    train_stays = cohort.stays.subset(train_idx)
    if "featurizer" in state:
        featurizer = Featurizer.from_dict(state["featurizer"])
    else:
        featurizer = Featurizer.fit(train_stays, cfg, opts.progress)
    train_samples = training_samples(cohort, train_idx, featurizer, opts.n_random, opts.seed, opts.use_cache, opts.progress)
    val_samples = training_samples(val_cohort, val_idx, featurizer, opts.n_random, opts.seed + 7919,
                                   opts.use_cache, opts.progress) if val_idx else []
    log.info("%d training samples from %d stays, %d validation samples from %d stays",
             len(train_samples), len(train_idx), len(val_samples), len(val_idx))
    model = build_model(cfg, featurizer, opts.seed).to(opts.device)
    if "model" in state:
        model.load_state_dict(state["model"])
    state["featurizer"] = featurizer.to_dict()

    def save_state():
        if state_path is not None:
            state["model"] = model.state_dict()
            tmp = state_path.with_suffix(".tmp")
            torch.save(state, tmp)
            tmp.replace(state_path)

    t0 = time.monotonic()
    if "ssl" not in state:  # inputs only: the validation stays' too, their labels are never read
        state["ssl"] = self_supervised(model, train_samples + val_samples, opts)
        save_state()
    pretrain(model, train_samples, opts, state, save_state)
    if "wide" not in state:
        state["wide"] = fit_wide_head(model, train_samples, val_samples, opts.device)
        save_state()
    t1 = time.monotonic()
    ft = finetune(model, train_samples, val_samples, opts, state, save_state)
    info = {"pretrain_seconds": round(t1 - t0, 1), "finetune_seconds": round(time.monotonic() - t1, 1),
            "train_samples": len(train_samples), "val_samples": len(val_samples), "wide_head": state["wide"],
            **({"self_supervised": state["ssl"]} if state["ssl"] else {}), **ft}
    return model, featurizer, cfg, info


CALIBRATION_SHARE = 0.5  # of the validation subjects, held out of the refit to calibrate the refit model


def run_training(data_spec: str, out: Path, opts: TrainOptions, val_spec: str | None = None, folds: int = 1,
                 resume: bool = False) -> dict:
    """The `medm2t train` pipeline; writes a checkpoint to `out` and returns its metrics."""
    import torch

    from model.allocator import reuse_freed_memory
    from model.checkpoint import save_checkpoint
    from model.data import Cohort, describe, fold_indices, load_cohort, split_indices

    reuse_freed_memory()
    t_start = time.monotonic()
    torch.manual_seed(opts.seed)
    out.mkdir(parents=True, exist_ok=True)
    cohort = load_cohort(data_spec, opts.use_cache, opts.progress)
    val_cohort = load_cohort(val_spec, opts.use_cache, opts.progress) if val_spec else None
    train_info: dict = {"data": describe(cohort), "validation": describe(val_cohort) if val_cohort else
                        f"{opts.val_fraction:.0%} of the training data's subjects, held out (seed {opts.seed})",
                        "options": asdict(opts), "folds": folds}
    metrics: dict = {}

    if folds > 1:
        pooled, per_fold = [], []
        for k, (tr, te) in enumerate(fold_indices(cohort, folds, opts.seed)):
            log.info("fold %d/%d: %d training stays, %d test stays", k + 1, folds, len(tr), len(te))
            sub = Cohort(cohort.spec, [cohort.compact[i] for i in tr], [], f"{cohort.key}-fold{k}", cohort.dense_vitals)
            inner_tr, inner_val = split_indices(sub, opts.val_fraction, opts.seed + k)
            inner_tr, inner_val = [tr[i] for i in inner_tr], [tr[i] for i in inner_val]
            model, featurizer, cfg, _ = fit_one(cohort, inner_tr, cohort, inner_val, opts,
                                                out / f"train_state_fold{k}.pt", resume)
            res = evaluate_model(model, featurizer, cohort, te, opts.device, opts.use_cache, opts.progress,
                                 return_predictions=True)
            per_fold.append(res["metrics"])
            pooled.append(res["predictions"])
        metrics["cross_validation"] = _summarise_folds(per_fold, pooled)

    if val_cohort is not None:
        train_idx, val_idx, vc = list(range(len(cohort.stays))), list(range(len(val_cohort.stays))), val_cohort
    else:
        train_idx, val_idx = split_indices(cohort, opts.val_fraction, opts.seed)
        vc = cohort
    model, featurizer, cfg, info = fit_one(cohort, train_idx, vc, val_idx, opts, out / "train_state.pt", resume)
    val_name = ("validation split of " if vc is cohort else "") + short_data_name(vc.spec)
    if _opt(opts, "refit") and val_idx:
        # The refit model must be calibrated on stays it never trained on: half of the validation subjects
        # join the refit, the other half calibrates it (a temperature carried over from the model before
        # the refit made set-b's ECE worse: 0.023 -> 0.031).
        refit_idx, cal_idx = split_indices(vc, CALIBRATION_SHARE, opts.seed + 17, among=val_idx)
        metrics["validation"] = evaluate_model(model, featurizer, vc, val_idx, opts.device, opts.use_cache, opts.progress)
        metrics["validation"]["note"] = "measured before refitting on training + validation data, uncalibrated"
        log.info("refitting on training + %d of %d validation stays: wide head, then %d fine-tuning epochs",
                 len(refit_idx), len(val_idx), info["best_epoch"])
        model, featurizer, info_refit = refit(cohort, train_idx, vc, refit_idx, cfg, opts, info["best_epoch"],
                                              info["wide_head"].get("l2"))
        info["refit"] = {**info_refit, "calibration_stays": len(cal_idx)}
        metrics["calibration_holdout"], calibration = validate_and_calibrate(
            model, featurizer, vc, cal_idx, opts, f"{len(cal_idx)} stays of {val_name} {HELD_OUT_OF_REFIT}")
    else:
        metrics["validation"], calibration = validate_and_calibrate(model, featurizer, vc, val_idx, opts, val_name)
    train_info.update(info)
    train_info["wall_seconds"] = round(time.monotonic() - t_start, 1)
    save_checkpoint(out, model, featurizer, cfg, metrics, train_info, calibration)
    for name in ("train_state.pt", *(f"train_state_fold{k}.pt" for k in range(folds))):
        (out / name).unlink(missing_ok=True)
    return {"metrics": metrics, "train_info": train_info}


def validate_and_calibrate(model, featurizer, val_cohort, val_idx, opts: TrainOptions, data_name: str):
    """Validation metrics of the calibrated model, and the calibration fitted on those validation predictions
    (None without validation stays). The calibrated metrics are in-sample for the temperatures; the ECE
    before calibration is kept beside them."""
    from model.calibration import fit_calibration

    if not val_idx:
        return evaluate_model(model, featurizer, val_cohort, val_idx, opts.device, opts.use_cache, opts.progress), None
    res = evaluate_model(model, featurizer, val_cohort, val_idx, opts.device, opts.use_cache, opts.progress,
                         return_predictions=True)
    calibration = fit_calibration(res["predictions"], data_name)
    if not calibration.tasks:
        log.warning("no calibration: no task has both outcomes among the validation stays")
        return res["metrics"], None
    metrics = metrics_from_predictions(calibration.apply(res["predictions"]))
    metrics["uncalibrated_ece"] = {"mortality": res["metrics"]["mortality"]["ece"],
                                   **{f"mortality@{k}": v["mortality"]["ece"] for k, v in res["metrics"]["landmarks"].items()}}
    for task, t in calibration.tasks.items():
        log.info("calibration %s: fitted temperature %.3f (p %.3f), applied %.3f, ECE %.4f -> %.4f on %d validation "
                 "samples", task, t.fitted_temperature, t.p_value, t.temperature, t.ece_before or 0.0, t.ece_after or 0.0, t.n)
    return metrics, calibration


def refit(cohort, train_idx, val_cohort, val_idx, cfg, opts: TrainOptions, epochs: int, wide_l2: float | None = None):
    """Train a fresh model (new featurizer) on training + validation stays for a fixed number of epochs."""
    from model.data import Cohort, training_samples
    from model.features import Featurizer

    compact = [cohort.compact[i] for i in train_idx] + [val_cohort.compact[i] for i in val_idx]
    key = hashlib.sha1(repr((cohort.key, list(train_idx), val_cohort.key, list(val_idx))).encode()).hexdigest()[:16]
    merged = Cohort(f"{cohort.spec}+{val_cohort.spec}", compact, [], key,
                    cohort.dense_vitals and val_cohort.dense_vitals)
    featurizer = Featurizer.fit(merged.stays, cfg, opts.progress)
    samples = training_samples(merged, list(range(len(compact))), featurizer, opts.n_random, opts.seed,
                               opts.use_cache, opts.progress)
    model = build_model(cfg, featurizer, opts.seed + 1).to(opts.device)
    state: dict = {}
    ssl = self_supervised(model, samples, opts)
    pretrain(model, samples, opts, state, lambda: None)
    fit_wide_head(model, samples, [], opts.device, l2=wide_l2)
    ft = finetune(model, samples, [], opts, state, lambda: None, fixed_epochs=epochs)
    return model, featurizer, {"stays": len(compact), "epochs": epochs, "samples": len(samples),
                               **({"self_supervised": ssl} if ssl else {}), **ft}


def _summarise_folds(per_fold: list[dict], pooled: list[dict]) -> dict:

    merged = {k: np.concatenate([p[k] for p in pooled]) for k in pooled[0]} if pooled else {}
    out = {"pooled_out_of_fold": metrics_from_predictions(merged) if merged else {}, "per_fold": per_fold}
    for task, key in (("mortality", "auroc"), ("mortality", "average_precision"), ("los_remaining", "mae")):
        vals = [f.get(task, {}).get(key) for f in per_fold]
        vals = [v for v in vals if v is not None]
        if vals:
            out[f"{task}_{key}_mean"] = float(np.mean(vals))
            out[f"{task}_{key}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return out
