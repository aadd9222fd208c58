"""Batched inference from a checkpoint folder: one forward pass per call, under torch.inference_mode,
on CUDA when present (with bfloat16 autocast there), CPU otherwise."""
from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Sequence

from medm2t.events import _Event
from medm2t.vocabulary import CVD_90D, CVD_CLASSES, LOS_REMAINING, MORTALITY
from model.calibration import Calibration

UNCALIBRATED = "uncalibrated model output"

log = logging.getLogger(__name__)


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    return device


class Predictor:
    def __init__(self, checkpoint_dir: str | Path, device: str = "auto"):
        from model.allocator import reuse_freed_memory
        from model.checkpoint import load_checkpoint

        reuse_freed_memory()
        self.device = resolve_device(device)
        self.model, self.featurizer, self.cfg, self.meta = load_checkpoint(checkpoint_dir, self.device)
        self.version: str = self.meta["model_version"]
        self.calibration = Calibration.from_dict(self.meta.get("calibration"))
        if "ecg" in self.model.encoders:
            from model.ecg_signal import load_filters

            load_filters()

    def calibration_label(self, task: str) -> str:
        """How far to trust `task`'s number, as every score of it says."""
        return (self.calibration and self.calibration.label(task)) or UNCALIBRATED

    def predict(self, items: Sequence[tuple[list[_Event], datetime]]) -> list[dict]:
        """One dict per (events, at): mortality probability, remaining and total ICU LOS (days), CVD class
        probabilities, plus elapsed hours, which modalities were present and how many items were unknown."""
        return self.predict_inputs([self.featurizer.encode(events, at) for events, at in items])

    def autocast(self):
        """The context every forward pass here runs in: inference mode, plus bfloat16 autocast on CUDA."""
        import contextlib

        import torch

        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.startswith("cuda")))
        return stack

    def predict_inputs(self, inputs: Sequence) -> list[dict]:
        from model.inputs import collate

        if not inputs:
            return []
        batch = collate(inputs, self.cfg).to(self.device)
        with self.autocast():
            out = self.model(batch)
        return results_from_outputs(out, [(x.elapsed_h, x.present, x.n_unknown) for x in inputs], self.calibration)


def output_arrays(out: dict, calibration: Calibration | None = None) -> dict:
    """Model outputs (logits) -> numpy arrays: mortality probability (N,), los_remaining days (N,) and cvd_90d
    class probabilities (N, 4). The one place where the heads' sigmoid and softmax are applied, after the
    checkpoint's temperatures when it has them (model/calibration.py)."""
    import torch

    t_mort = calibration.temperature(MORTALITY) if calibration else 1.0
    t_cvd = calibration.temperature(CVD_90D) if calibration else 1.0
    return {MORTALITY: torch.sigmoid(out[MORTALITY].float() / t_mort).cpu().numpy(),
            LOS_REMAINING: out[LOS_REMAINING].float().cpu().numpy(),
            CVD_90D: torch.softmax(out[CVD_90D].float() / t_cvd, dim=-1).cpu().numpy()}


def results_from_outputs(out: dict, rows: Sequence[tuple[float, dict[str, bool], int]],
                         calibration: Calibration | None = None) -> list[dict]:
    """Model outputs (the dict MedM2T.forward returns, batch of len(rows)) -> one result dict per row:
    mortality probability, remaining and total ICU LOS (days), CVD class probabilities, plus the row's
    (elapsed hours, modalities present, number of unknown items). Shared by the full-recompute path
    (Predictor.predict_inputs) and the incremental one (stream.scorers.medm2t.MedM2TScorer)."""
    arrays = output_arrays(out, calibration)
    mort, los, cvd = arrays[MORTALITY], arrays[LOS_REMAINING], arrays[CVD_90D]
    results = []
    for i, (elapsed_h, present, n_unknown) in enumerate(rows):
        remaining = float(los[i])
        results.append({
            MORTALITY: float(mort[i]),
            LOS_REMAINING: remaining,
            "los_total": elapsed_h / 24.0 + remaining,
            CVD_90D: {c: float(cvd[i, k]) for k, c in enumerate(CVD_CLASSES)},
            "elapsed_h": elapsed_h,
            "present": present,
            "n_unknown": n_unknown,
        })
    return results
