"""A checkpoint folder holds everything needed to score: weights, config, every fitted featurizer artifact,
metrics, training info, a version stamp and a model card. Loading needs nothing else.

    weights.pt        state_dict (float32)
    config.json       ModelConfig
    featurizer.json   value cut-points, vocabularies, window edges, scalers, ECG statement vocabulary
    meta.json         format + architecture version, model_version, metrics, train_info, created,
                      calibration (model/calibration.py; absent: outputs are uncalibrated)
    model_card.md     data, metrics, intended use, limitations
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

CHECKPOINT_FORMAT = 1
HELD_OUT_OF_REFIT = "held out of the refit"  # how model.train names the calibration data it holds back


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or made by another model version."""


def _model_version(weights: Path, arch: str, calibration=None) -> str:
    """arch+<weights digest>, plus -cal<digest> when calibrated: a new calibration changes every output."""
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
    return f"{arch}+{digest}" + (f"-cal{calibration.digest()}" if calibration else "")


def save_checkpoint(directory, model, featurizer, cfg, metrics: dict, train_info: dict, calibration=None) -> Path:
    import torch

    from model.network import ARCH_VERSION

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "weights.pt"
    torch.save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, weights)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    (out / "featurizer.json").write_text(json.dumps(featurizer.to_dict()) + "\n")
    meta = {
        "format": CHECKPOINT_FORMAT,
        "architecture": ARCH_VERSION,
        "model_version": _model_version(weights, ARCH_VERSION, calibration),
        "preset": cfg.preset,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "metrics": metrics,
        "train_info": train_info,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if calibration is not None:
        meta["calibration"] = calibration.to_dict()
    _write_meta(out, meta, featurizer)
    return out


def set_calibration(directory, calibration, featurizer) -> dict:
    """Store `calibration` in an existing checkpoint (new model_version, model card rewritten); -> meta.
    `featurizer`: the checkpoint's own, as load_checkpoint returned it (the card lists its items)."""
    d = Path(directory)
    meta = json.loads((d / "meta.json").read_text())
    meta["calibration"] = calibration.to_dict()
    meta["model_version"] = _model_version(d / "weights.pt", meta["architecture"], calibration)
    _write_meta(d, meta, featurizer)
    return meta


def _write_meta(out: Path, meta: dict, featurizer) -> None:
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    (out / "model_card.md").write_text(model_card(meta, featurizer))


def load_checkpoint(directory, device: str = "cpu"):
    """-> (model in eval mode, featurizer, cfg, meta). Raises CheckpointError with a clear reason."""
    import torch

    from model.config import ModelConfig
    from model.features import Featurizer
    from model.network import ARCH_VERSION, MedM2T

    d = Path(directory)
    missing = [n for n in ("weights.pt", "config.json", "featurizer.json", "meta.json") if not (d / n).is_file()]
    if missing:
        raise CheckpointError(f"{d} is not a MedM2T checkpoint: missing {', '.join(missing)}")
    meta = json.loads((d / "meta.json").read_text())
    if meta.get("format") != CHECKPOINT_FORMAT or meta.get("architecture") != ARCH_VERSION:
        raise CheckpointError(
            f"{d} was made by model version {meta.get('architecture')!r} (checkpoint format {meta.get('format')}); "
            f"this code reads {ARCH_VERSION!r} (format {CHECKPOINT_FORMAT}). Retrain with `medm2t train` or use a matching release.")
    try:
        cfg = ModelConfig.from_dict(json.loads((d / "config.json").read_text()))
        featurizer = Featurizer.from_dict(json.loads((d / "featurizer.json").read_text()))
        model = MedM2T(cfg, featurizer.spec())
        state = torch.load(d / "weights.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise CheckpointError(f"{d}: cannot load checkpoint ({exc})") from exc
    return model.to(device).eval(), featurizer, cfg, meta


def model_card(meta: dict, featurizer) -> str:
    info = meta.get("train_info", {})
    metrics = meta.get("metrics", {})
    n_items = {g: sum(1 for it in featurizer.items.values() if it.group == g) for g in ("labs", "vitals_tok")}
    lines = [
        f"# MedM2T model card — {meta['model_version']}",
        "",
        f"Preset `{meta['preset']}`, {meta['n_parameters']:,} parameters, created {meta['created']}.",
        f"Encoders: {', '.join(featurizer.cfg.modalities)}; wide head (linear on static inputs and per-item "
        f"summaries): {'yes' if featurizer.cfg.wide_head else 'no'}.",
        "",
        *(_refit_lines(info["refit"]) if "refit" in info else []),
        "## Training data",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        f"- items seen in training: {n_items['labs']} lab, {n_items['vitals_tok']} vital; "
        f"{len(featurizer.ecg_spec['statements'])} ECG statements",
        "",
        *_calibration_lines(meta),
        "## Metrics",
        "",
        "```json",
        json.dumps(metrics, indent=1, default=str),
        "```",
        "",
        "## Intended use",
        "",
        "Research and demonstration of streaming multimodal ICU risk scoring (in-hospital mortality, remaining ICU",
        "length of stay, 90-day cardiovascular events) on replayed data. Not a medical device; not for clinical decisions.",
        "",
        "## Limitations",
        "",
        "- Calibration (above) was fitted on one data set; it shifts with the population like everything else.",
        "- Trained on the data named above only; other hospitals, populations and item codes shift performance.",
        "  Items never seen in training are ignored (counted in the featurizer's unknown_items).",
        "- Tasks whose labels were absent from the training data (see metrics) have untrained heads.",
        "- Scores early in a stay rest on little data; the model was trained on random prediction times (landmarks).",
        "",
    ]
    return "\n".join(lines)


def _calibration_lines(meta: dict) -> list[str]:
    from model.calibration import Calibration

    cal = Calibration.from_dict(meta.get("calibration"))
    if cal is None:
        return ["## Calibration", "", "None: probabilities are uncalibrated model outputs.", ""]
    lines = ["## Calibration", "",
             f"Temperature scaling per task, fitted on {cal.data} at the evaluation landmarks (6/12/24/48 h and end of "
             "data), stored in meta.json and applied to every output. ECE is over 10 equal-width bins, on that "
             "same data (in-sample for the temperature).", "",
             "A fitted temperature is applied only if it improves the log-likelihood significantly (likelihood-ratio "
             "test per stay, 5 %); otherwise the applied temperature is 1.", "",
             "| task | method | fitted | p | applied | samples | ECE before | ECE after |", "|---|---|---|---|---|---|---|---|"]
    for task, t in cal.tasks.items():
        lines.append(f"| {task} | {t.method} | {t.fitted_temperature:.3f} | {t.p_value:.3f} | {t.temperature:.3f} | "
                     f"{t.n:,} | {_num(t.ece_before)} | {_num(t.ece_after)} |")
    if cal.los_mae_days is not None:
        lines += ["", f"los_remaining is a point estimate in days (no interval); validation MAE {cal.los_mae_days:.2f} days."]
    if cal.data.endswith(HELD_OUT_OF_REFIT):
        lines += ["", "The model was refit on the training stays plus half of the validation subjects; the other "
                  "half, which the refit model never trained on, fitted the temperatures."]
    return lines + [""]


def _refit_lines(refit: dict) -> list[str]:
    share = "half of the validation stays" if "calibration_stays" in refit else "all validation stays"
    return [f"The saved weights were refit on training + {share} after model selection. The `validation`",
            "metrics below come from the model before that refit, on the data that chose its epoch count and L2",
            "strength, so they are somewhat optimistic"
            + ("; `calibration_holdout` is the refit model on the other half (unseen in training, in-sample for the"
               " temperatures)." if "calibration_stays" in refit else "."),
            "Judge the model on data it never saw.", ""]


def _num(x) -> str:
    return "-" if x is None else f"{x:.3f}"
