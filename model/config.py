"""Every dimension of the MedM2T network in one dataclass, with the two presets.

`paper` follows the reference dimensions (medm2t-reference.md §3-4, Task 2/3 column); `small` is a CPU demo
sized so a PhysioNet-2012 run of several landmark epochs fits in minutes on two cores and the checkpoint
stays well under 8 MB.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

# Modalities in fusion order. The two sparse groups are the paper's Labs and Vitals(C) encoders; `vitals`
# is the dense multi-scale Vitals(N) encoder; `ecg` is the hierarchical (micro + macro) ECG encoder.
MODALITIES: tuple[str, ...] = ("static", "labs", "vitals_tok", "vitals", "ecg")

# Bedside concepts on the dense vitals grid, in channel order (the reference's 8 channels).
VITAL_CONCEPTS: tuple[str, ...] = ("hr", "sbp", "dbp", "map", "temp", "rr", "spo2", "fio2")


@dataclass
class ModelConfig:
    preset: str = "small"
    # Normalisation in MLPs and conv stacks: "layer" (per sample), "batch" (the reference) or "none".
    # BatchNorm's running statistics fit landmark prefixes of very different lengths badly (eval-mode loss
    # far from train-mode loss on PhysioNet 2012), so the small preset normalises per sample.
    norm: str = "layer"
    # Sparse time-series encoders (labs / tokenised vitals)
    value_bins: int = 11              # quantile intervals per numeric item (cut-points at 5,15,..,95 %)
    labs_windows: int = 12            # cumulative time windows (edges = quantiles of training event times)
    vitals_tok_windows: int = 12
    d_labs: int = 32
    d_vitals_tok: int = 32
    lstm_layers: int = 2
    sparse_dropout: float = 0.3
    last_item_dim: int = 16           # per-item embedding of the current value token (0 = off, the reference)
    item_summary: bool = True         # per-item count and mean/min/max value rank so far (False = the reference)
    wide_head: bool = True            # linear term of static + item summaries added to every head (wide & deep)
    window_time_dim: int = 0          # learned encoding of each window's distance from the prediction time (0 = off)
    # Static
    d_static: int = 32
    static_dropout: float = 0.3
    # Dense vitals multi-scale (6-minute grid over the last `vitals_hours` before the prediction time)
    vitals_hours: int = 24
    vitals_step_min: int = 6
    vitals_segments: int = 24
    hf1_width: int = 12
    hf2_width: int = 24
    d_hf_attn: int = 8
    hf_heads: int = 0                 # 0 = no self-attention inside a segment (CPU demo)
    hf_dropout: float = 0.0
    hf1_channels: tuple[int, int] = (8, 16)
    hf2_channels: tuple[int, int] = (16, 32)
    d_hf1: int = 16
    d_hf2: int = 32
    lf_channels: tuple[int, ...] = (48, 48)
    d_vitals: int = 64
    vitals_dropout: float = 0.1
    # ECG micro level (one ECG): 12 x 640 at 125 Hz
    ecg_fs: int = 125
    ecg_len: int = 640
    ecg_resnet: tuple[tuple[int, int], ...] = ((16, 320), (32, 80), (48, 20))  # (channels, length) per block
    ecg_kernel: int = 5
    d_ecg_sig: int = 64
    d_ecg_meas: int = 32
    d_ecg_text: int = 32
    d_ecg_embed: int = 64             # per-ECG embedding fed to the macro level
    stmt_vocab_max: int = 255
    max_ecgs: int = 8                 # most recent ECGs kept per stay
    # ECG macro level
    ecg_windows: int = 5
    ecg_macro_channels: tuple[int, ...] = (32,)
    d_ecg: int = 64
    ecg_dropout: float = 0.1
    # Fusion
    d_fusion: int = 64
    attn_heads: int = 4
    attn_blocks: int = 1
    ffn_mult: int = 2
    decoder_hidden: int = 128
    fusion_dropout: float = 0.3
    modalities: tuple[str, ...] = field(default_factory=lambda: MODALITIES)
    vital_concepts: tuple[str, ...] = field(default_factory=lambda: VITAL_CONCEPTS)

    @classmethod
    def preset_names(cls) -> tuple[str, ...]:
        return ("paper", "small")

    @classmethod
    def from_preset(cls, name: str) -> ModelConfig:
        if name == "small":
            return cls(preset="small")
        if name == "paper":
            return cls(
                preset="paper", norm="batch", last_item_dim=0, item_summary=False, wide_head=False, labs_windows=5, vitals_tok_windows=24, d_labs=512, d_vitals_tok=256, static_dropout=0.1, fusion_dropout=0.1,
                d_static=128, d_hf_attn=16, hf_heads=4, hf_dropout=0.3, hf1_channels=(16, 32), hf2_channels=(32, 64), d_hf1=128, d_hf2=256, lf_channels=(384, 192), d_vitals=256,
                ecg_resnet=((64, 640), (128, 320), (196, 160), (256, 40), (320, 20)), d_ecg_sig=640,
                d_ecg_meas=128, d_ecg_text=256, d_ecg_embed=768, ecg_macro_channels=(384,), d_ecg=256,
                d_fusion=512, attn_heads=64, ffn_mult=4, decoder_hidden=3840, sparse_dropout=0.05,
            )
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(cls.preset_names())}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown ModelConfig fields {sorted(unknown)} (checkpoint from another model version?)")
        kw = {}
        for k, v in d.items():
            if isinstance(v, list):  # JSON turns tuples into lists
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            kw[k] = v
        return cls(**kw)
