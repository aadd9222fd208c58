"""Training: supervised pre-training of each modality encoder, then end-to-end fine-tuning.

Stages (all on landmark prefixes, see model/landmarks.py):
0. self-supervised (off by default; `ssl_epochs > 0`): masked-item pre-training of the sparse encoders on
   the inputs of the training and validation stays, without labels (model/selfsupervised.py).
1. pre-train: for every modality, its encoder + its pre-training head on the multi-task loss, using
   only samples in which that modality is present (as the paper's unimodal stage, without B3/B4).
   Off by default in the small preset (see PRESET_DEFAULTS in model/train_options.py); `pretrain_epochs > 0`
   turns it on.
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

import hashlib
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

from medm2t.vocabulary import LOS_REMAINING, MORTALITY
from model.calibration import short_data_name
from model.checkpoint import HELD_OUT_OF_REFIT
from model.evaluate import evaluate_model, metrics_from_predictions
from model.stages import finetune, pretrain, self_supervised
from model.train_options import TrainOptions, option
from model.wide import fit_wide_head

log = logging.getLogger(__name__)


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
    from model.feature_fit import fit_featurizer
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
        featurizer = fit_featurizer(train_stays, cfg, opts.progress)
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
    from model.data import describe, load_cohort, split_indices

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
        metrics["cross_validation"] = cross_validate(cohort, folds, out, opts, resume)

    if val_cohort is not None:
        train_idx, val_idx, vc = list(range(len(cohort.stays))), list(range(len(val_cohort.stays))), val_cohort
    else:
        train_idx, val_idx = split_indices(cohort, opts.val_fraction, opts.seed)
        vc = cohort
    model, featurizer, cfg, info = fit_one(cohort, train_idx, vc, val_idx, opts, out / "train_state.pt", resume)
    val_name = ("validation split of " if vc is cohort else "") + short_data_name(vc.spec)
    if option(opts, "refit") and val_idx:
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


def cross_validate(cohort, folds: int, out: Path, opts: TrainOptions, resume: bool) -> dict:
    """GroupKFold by subject: each fold fits its own featurizer and model on its training split (with an
    inner validation split) and is evaluated on its test stays; metrics pooled and per fold."""
    from model.data import Cohort, fold_indices, split_indices

    pooled, per_fold = [], []
    for k, (tr, te) in enumerate(fold_indices(cohort, folds, opts.seed)):
        log.info("fold %d/%d: %d training stays, %d test stays", k + 1, folds, len(tr), len(te))
        sub = Cohort(cohort.spec, [cohort.compact[i] for i in tr], [], f"{cohort.key}-fold{k}", cohort.dense_vitals)
        inner_tr, inner_val = split_indices(sub, opts.val_fraction, opts.seed + k)
        inner_tr, inner_val = [tr[i] for i in inner_tr], [tr[i] for i in inner_val]
        model, featurizer, _, _ = fit_one(cohort, inner_tr, cohort, inner_val, opts, out / f"train_state_fold{k}.pt",
                                          resume)
        res = evaluate_model(model, featurizer, cohort, te, opts.device, opts.use_cache, opts.progress,
                             return_predictions=True)
        per_fold.append(res["metrics"])
        pooled.append(res["predictions"])
    return _summarise_folds(per_fold, pooled)


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
    metrics["uncalibrated_ece"] = {MORTALITY: res["metrics"][MORTALITY]["ece"],
                                   **{f"mortality@{k}": v[MORTALITY]["ece"] for k, v in res["metrics"]["landmarks"].items()}}
    for task, t in calibration.tasks.items():
        log.info("calibration %s: fitted temperature %.3f (p %.3f), applied %.3f, ECE %.4f -> %.4f on %d validation "
                 "samples", task, t.fitted_temperature, t.p_value, t.temperature, t.ece_before or 0.0, t.ece_after or 0.0, t.n)
    return metrics, calibration


def refit(cohort, train_idx, val_cohort, val_idx, cfg, opts: TrainOptions, epochs: int, wide_l2: float | None = None):
    """Train a fresh model (new featurizer) on training + validation stays for a fixed number of epochs."""
    from model.data import Cohort, training_samples
    from model.feature_fit import fit_featurizer

    compact = [cohort.compact[i] for i in train_idx] + [val_cohort.compact[i] for i in val_idx]
    key = hashlib.sha1(repr((cohort.key, list(train_idx), val_cohort.key, list(val_idx))).encode()).hexdigest()[:16]
    merged = Cohort(f"{cohort.spec}+{val_cohort.spec}", compact, [], key,
                    cohort.dense_vitals and val_cohort.dense_vitals)
    featurizer = fit_featurizer(merged.stays, cfg, opts.progress)
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
    for task, key in ((MORTALITY, "auroc"), (MORTALITY, "average_precision"), (LOS_REMAINING, "mae")):
        vals = [f.get(task, {}).get(key) for f in per_fold]
        vals = [v for v in vals if v is not None]
        if vals:
            out[f"{task}_{key}_mean"] = float(np.mean(vals))
            out[f"{task}_{key}_sd"] = float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0
    return out
