"""The options of a training run (`medm2t train`), with each preset's defaults."""
from __future__ import annotations

from dataclasses import dataclass, field


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


def option(opts: TrainOptions, name: str):
    """An option as set, else the preset's default."""
    value = getattr(opts, name)
    return PRESET_DEFAULTS.get(opts.preset, PRESET_DEFAULTS["small"])[name] if value is None else value
