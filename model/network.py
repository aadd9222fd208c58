"""MedM2T: one encoder per modality, fused by pairwise bi-modal attention, three task heads.

`forward(batch)` returns {'mortality': (B,) logit, 'los_remaining': (B,) days >= 0, 'cvd_90d': (B, 4) logits}.
Each encoder can be trained alone (supervised pre-training, as the reference does) through
`encoder_forward(name, batch)` and `pretrain_heads[name]`; use `batch.present[name]` to keep only the
samples that have the modality. Every submodule is registered (ModuleDict/ModuleList, bug B5).
"""
from __future__ import annotations

import torch
from torch import nn

from model.blocks import TaskHeads
from model.config import ModelConfig
from model.ecg import EcgEncoder
from model.fusion import Fusion
from model.sparse import SparseEncoder
from model.static import StaticEncoder
from model.vitals import VitalsEncoder

ARCH_VERSION = "medm2t-arch-3"  # 2: configurable normalisation (LayerNorm in small), per-item current value
# 3: per-item summaries (count, mean/min/max value rank) and the wide head


class MedM2T(nn.Module):
    def __init__(self, cfg: ModelConfig, featurizer_spec: dict):
        super().__init__()
        self.cfg, self.spec = cfg, featurizer_spec
        self.modalities: list[str] = list(cfg.modalities)
        builders = {
            "static": lambda: StaticEncoder(featurizer_spec["n_static"], cfg.d_static, cfg.static_dropout, cfg.norm),
            "labs": lambda: self._sparse("labs", cfg.d_labs),
            "vitals_tok": lambda: self._sparse("vitals_tok", cfg.d_vitals_tok),
            "vitals": lambda: VitalsEncoder(2 * len(cfg.vital_concepts),
                                            int(round(cfg.vitals_hours * 60 / cfg.vitals_step_min)), cfg),
            "ecg": lambda: EcgEncoder(featurizer_spec["n_statements"], featurizer_spec["windows"]["ecg"], cfg),
        }
        unknown = set(self.modalities) - set(builders)
        if unknown:
            raise ValueError(f"unknown modalities {sorted(unknown)}; known: {sorted(builders)}")
        self.encoders = nn.ModuleDict({m: builders[m]() for m in self.modalities})
        self.sparse_groups = [m for m in self.modalities if isinstance(self.encoders[m], SparseEncoder)]
        if cfg.wide_head and not cfg.item_summary:
            raise ValueError("wide_head needs item_summary")
        d_wide = featurizer_spec["n_static"] + sum(self.encoders[g].d_wide for g in self.sparse_groups)
        d_wide = d_wide if cfg.wide_head else 0
        self.fusion = Fusion({m: (enc.d_out, enc.d_tok) for m, enc in self.encoders.items()}, cfg, d_wide)
        self.pretrain_heads = nn.ModuleDict({
            m: TaskHeads(enc.d_out, max(enc.d_out // 2, 16), 0.1, cfg.norm) for m, enc in self.encoders.items()})

    def _sparse(self, group: str, d: int) -> SparseEncoder:
        s = self.spec
        return SparseEncoder(s["n_values"][group], s["n_items"][group], s["windows"][group], d,
                             self.cfg.lstm_layers, self.cfg.sparse_dropout, self.cfg.norm,
                             self.cfg.last_item_dim, s["value_rank"][group] if self.cfg.item_summary else None,
                             s["edges"][group], self.cfg.window_time_dim)

    def encode(self, name: str, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(pooled (B, d), tokens (B, L, d_tok), token mask (B, L))"""
        enc = self.encoders[name]
        if name == "static":
            return enc(batch.static, batch.tfeat)
        if name == "vitals":
            return enc(batch.vitals, batch.tfeat)
        if name == "ecg":
            return enc(batch.ecg, batch.tfeat)
        return enc(batch.sparse[name], batch.tfeat, batch.elapsed_h)

    def encoder_forward(self, name: str, batch) -> torch.Tensor:
        return self.encode(name, batch)[0]

    def pretrain_forward(self, name: str, batch) -> dict[str, torch.Tensor]:
        return self.pretrain_heads[name](self.encoder_forward(name, batch))

    def wide_inputs(self, static: torch.Tensor, sparse: dict[str, tuple[torch.Tensor, torch.Tensor]]):
        """The wide head's input: the static vector and, per sparse group, the per-item summaries and
        current value ranks; `sparse[group]` = (summary accumulators (B, I, 4), current tokens (B, I))."""
        if not self.cfg.wide_head:
            return None
        return torch.cat([static] + [self.encoders[g].wide_features(*sparse[g]) for g in self.sparse_groups], dim=-1)

    def _summaries(self, batch) -> dict[str, torch.Tensor | None]:
        return {g: self.encoders[g].batch_summary(batch.sparse[g], batch.size) for g in self.sparse_groups}

    def wide_features_of(self, batch, summaries: dict | None = None) -> torch.Tensor | None:
        if not self.cfg.wide_head:
            return None
        summaries = summaries or self._summaries(batch)
        return self.wide_inputs(batch.static, {g: (summaries[g], batch.sparse[g]["last"][:, -1])
                                               for g in self.sparse_groups})

    def forward(self, batch) -> dict[str, torch.Tensor]:
        summaries = self._summaries(batch)  # shared by the sparse encoders and the wide head
        enc = {m: self.encoders[m](batch.sparse[m], batch.tfeat, batch.elapsed_h, summaries[m]) if m in summaries
               else self.encode(m, batch) for m in self.modalities}
        return self.fusion(enc, batch.present, batch.tfeat, self.wide_features_of(batch, summaries))
