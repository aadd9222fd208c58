"""Dense vitals, multi-scale hierarchical (the reference's Vitals(N)), on the 6-minute grid of
model/inputs.py (carried-forward z-scores + observed flags, last 24 h before the prediction time).

* 24 segments per scale, start_k = int(k * (T - w) / 23): HF1 sees w = 12 steps (72 min), HF2 w = 24.
* Segment encoder (per segment, per sample): Linear channel mixing + learned position, self-attention
  over the time steps of that segment only, a small ResNet1d and an MLP.
* The 24 (HF1 || HF2) segment embeddings form the token sequence for the bi-modal attention and go
  through the low-frequency ResNet1d across segments and an MLP with the elapsed-time features.
Both HF encoders live in this nn.Module (registered, trained and moved with it: fixes reference bug B5).
"""
from __future__ import annotations

import torch
from torch import nn

from model.blocks import CrossAttention, ResNet1d, mlp
from model.sparse import N_TFEAT


class SegmentEncoder(nn.Module):
    def __init__(self, in_ch: int, width: int, d_attn: int, heads: int, ch: tuple[int, int], d_out: int, dropout: float,
                 norm: str):
        super().__init__()
        self.inp = nn.Linear(in_ch, d_attn)
        self.pos = nn.Parameter(torch.zeros(width, d_attn))
        self.attn = CrossAttention(d_attn, heads, dropout) if heads else None
        self.res = ResNet1d(d_attn, width, ((ch[0], width), (ch[1], width // 2)), 3, dropout, norm)
        self.out = mlp(self.res.out_dim, [d_out], dropout, norm)

    def forward(self, seg: torch.Tensor) -> torch.Tensor:
        """(N, w, C) -> (N, d_out)"""
        x = self.inp(seg) + self.pos
        if self.attn is not None:
            x = self.attn(x, x, torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
        return self.out(self.res(x.transpose(1, 2)))  # already ResNet1d's channels-last layout: no copy


class VitalsEncoder(nn.Module):
    def __init__(self, n_channels: int, n_steps: int, cfg):
        super().__init__()
        s = cfg.vitals_segments
        self.hf1 = SegmentEncoder(n_channels, cfg.hf1_width, cfg.d_hf_attn, cfg.hf_heads, cfg.hf1_channels, cfg.d_hf1,
                                  cfg.hf_dropout, cfg.norm)
        self.hf2 = SegmentEncoder(n_channels, cfg.hf2_width, cfg.d_hf_attn, cfg.hf_heads, cfg.hf2_channels, cfg.d_hf2,
                                  cfg.hf_dropout, cfg.norm)
        for name, w in (("idx1", cfg.hf1_width), ("idx2", cfg.hf2_width)):
            starts = torch.tensor([int(k * (n_steps - w) / (s - 1)) for k in range(s)])
            self.register_buffer(name, starts[:, None] + torch.arange(w)[None, :], persistent=False)
        d_seg = cfg.d_hf1 + cfg.d_hf2
        lengths = [s // (2 ** i) for i in range(len(cfg.lf_channels))]
        self.lf = ResNet1d(d_seg, s, tuple(zip(cfg.lf_channels, lengths)), 3, cfg.vitals_dropout, cfg.norm)
        self.out = mlp(self.lf.out_dim + N_TFEAT, [cfg.d_vitals], cfg.vitals_dropout, cfg.norm)
        self.segments = s
        self.d_out, self.d_tok = cfg.d_vitals, d_seg

    def segment_embeddings(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, C, T) -> (B, S, d_hf1 + d_hf2)"""
        b, c, _ = grid.shape
        steps = grid.transpose(1, 2)  # (B, T, C)
        seg1 = steps[:, self.idx1.flatten()].view(b * self.segments, -1, c)  # (B * S, w, C)
        seg2 = steps[:, self.idx2.flatten()].view(b * self.segments, -1, c)
        return torch.cat([self.hf1(seg1), self.hf2(seg2)], dim=-1).view(b, self.segments, -1)

    def forward(self, grid: torch.Tensor, tfeat: torch.Tensor):
        tok = self.segment_embeddings(grid)
        pooled = self.out(torch.cat([self.lf(tok.transpose(1, 2)), tfeat], dim=-1))
        return pooled, tok, torch.ones(tok.shape[:2], dtype=torch.bool, device=tok.device)
