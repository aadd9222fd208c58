"""A checkpoint folder holds everything needed to score: weights, config, every fitted featurizer artifact,
metrics, training info, a version stamp and a model card. Loading needs nothing else.

    weights.pt        state_dict (float32)
    config.json       ModelConfig
    featurizer.json   value cut-points, vocabularies, window edges, scalers, ECG statement vocabulary
    meta.json         format + architecture version, model_version, metrics, train_info, created
    model_card.md     data, metrics, intended use, limitations
"""
from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path

CHECKPOINT_FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or made by another model version."""


def _model_version(weights: Path, arch: str) -> str:
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()[:10]
    return f"{arch}+{digest}"


def save_checkpoint(directory, model, featurizer, cfg, metrics: dict, train_info: dict) -> Path:
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
        "model_version": _model_version(weights, ARCH_VERSION),
        "preset": cfg.preset,
        "n_parameters": int(sum(p.numel() for p in model.parameters())),
        "metrics": metrics,
        "train_info": train_info,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1, default=str) + "\n")
    (out / "model_card.md").write_text(model_card(meta, featurizer))
    return out


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
        *(["The saved weights were refit on training + validation stays after model selection. The validation",
           "metrics below come from the model before that refit, on the data that chose its epoch count and L2",
           "strength, so they are somewhat optimistic; judge the model on data it never saw.", ""]
          if "refit" in info else []),
        "## Training data",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        f"- items seen in training: {n_items['labs']} lab, {n_items['vitals_tok']} vital; "
        f"{len(featurizer.ecg_spec['statements'])} ECG statements",
        "",
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
        "- Outputs are uncalibrated model outputs unless a calibration is named in meta.json.",
        "- Trained on the data named above only; other hospitals, populations and item codes shift performance.",
        "  Items never seen in training are ignored (counted in the featurizer's unknown_items).",
        "- Tasks whose labels were absent from the training data (see metrics) have untrained heads.",
        "- Scores early in a stay rest on little data; the model was trained on random prediction times (landmarks).",
        "",
    ]
    return "\n".join(lines)
