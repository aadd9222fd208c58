"""MedM2T's scorer loaded in this process from settings (its checkpoint, device and threads), and the one
error that any scorer setting raises."""
from __future__ import annotations

from datetime import timedelta

from medm2t.settings import Settings
from stream.scoring import Scorer


class ScorerConfigError(ValueError):
    pass


def load_medm2t(settings: Settings) -> Scorer:
    if not settings.checkpoint.is_dir():
        raise ScorerConfigError(f"MedM2T checkpoint folder {settings.checkpoint} does not exist (train one or set MEDM2T_CHECKPOINT)")
    try:
        from stream.scorers.medm2t import MedM2TScorer
    except ImportError as exc:
        raise ScorerConfigError(f"the MedM2T scorer cannot be imported: {exc}") from exc
    if settings.torch_threads:
        import torch

        torch.set_num_threads(settings.torch_threads)
    try:
        cadence = timedelta(minutes=settings.medm2t_cadence_min)  # 0: every point (batched all the same)
        return MedM2TScorer.load(settings.checkpoint, settings.device, cadence=cadence)
    except ValueError as exc:  # CheckpointError (missing files, another model version) or an unavailable device
        raise ScorerConfigError(f"MedM2T checkpoint cannot be used: {exc}") from exc
