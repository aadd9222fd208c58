"""Multimodal fusion: per-modality projection + a weight-shared encoder, pairwise Bi-Modal Attention over
per-sample token sequences, and the task heads.

* z_m = S(P_m h_m) for the pooled vector, and the same S over the modality's projected token sequence.
* A modality a sample does not have (no labs yet, no ECG, ...) gets a learned embedding for z_m and a
  single learned token (mask = that position only), so the head always sees a defined input.
* For every unordered pair (i, j) (any number of modalities: itertools.combinations), one
  BiModalAttention module with two independent stacks: tokens of i attend to tokens of j and vice versa,
  each with key padding masks; the two directions' masked means are ADDED (reference bug B2 added one
  direction to itself). Attention is within one sample only (bug B1 fixed). Modules are built separately,
  not deep-copied from one instance (B6).
"""
from __future__ import annotations

from itertools import combinations

import torch
from torch import nn

from model.blocks import CrossAttention, TaskHeads, masked_mean
from model.sparse import N_TFEAT


class BiModalAttention(nn.Module):
    def __init__(self, dim: int, heads: int, blocks: int, dropout: float, ffn_mult: int):
        super().__init__()
        self.i_to_j = nn.ModuleList(CrossAttention(dim, heads, dropout, ffn_mult) for _ in range(blocks))
        self.j_to_i = nn.ModuleList(CrossAttention(dim, heads, dropout, ffn_mult) for _ in range(blocks))

    def forward(self, ti, mi, tj, mj) -> torch.Tensor:
        a, b = ti, tj
        for blk in self.i_to_j:
            a = blk(a, tj, mj)
        for blk in self.j_to_i:
            b = blk(b, ti, mi)
        return masked_mean(a, mi) + masked_mean(b, mj)


def pair_key(i: str, j: str) -> str:
    return f"{i}__{j}"


class Fusion(nn.Module):
    def __init__(self, dims: dict[str, tuple[int, int]], cfg, d_wide: int = 0):
        super().__init__()
        e = cfg.d_fusion
        self.names = list(dims)
        self.proj = nn.ModuleDict({m: nn.Linear(d, e) for m, (d, _) in dims.items()})
        self.tok_proj = nn.ModuleDict({m: nn.Linear(dt, e) for m, (_, dt) in dims.items()})
        self.shared = nn.Sequential(nn.Linear(e, e), nn.ReLU(), nn.Dropout(cfg.fusion_dropout))
        self.missing = nn.ParameterDict({m: nn.Parameter(torch.randn(e) * 0.02) for m in dims})
        self.missing_tok = nn.ParameterDict({m: nn.Parameter(torch.randn(e) * 0.02) for m in dims})
        self.pairs = list(combinations(self.names, 2))
        self.bma = nn.ModuleDict({pair_key(i, j): BiModalAttention(e, cfg.attn_heads, cfg.attn_blocks, cfg.fusion_dropout,
                                                                   cfg.ffn_mult)
                                  for i, j in self.pairs})
        self.heads = TaskHeads((len(self.names) + len(self.pairs)) * e + N_TFEAT, cfg.decoder_hidden, cfg.fusion_dropout,
                               cfg.norm, d_wide)

    def forward(self, enc: dict[str, tuple], present: dict[str, torch.Tensor], tfeat: torch.Tensor,
                wide: torch.Tensor | None = None):
        z, toks, masks = {}, {}, {}
        for m in self.names:
            pooled, tok, mask = enc[m]
            p = present[m]
            z[m] = torch.where(p[:, None], self.shared(self.proj[m](pooled)), self.missing[m])
            t = torch.where(p[:, None, None], self.shared(self.tok_proj[m](tok)), self.missing_tok[m])
            first = torch.zeros_like(mask)
            first[:, 0] = True
            toks[m], masks[m] = t, torch.where(p[:, None], mask, first)
        inter = [self.bma[pair_key(i, j)](toks[i], masks[i], toks[j], masks[j]) for i, j in self.pairs]
        return self.heads(torch.cat([z[m] for m in self.names] + inter + [tfeat], dim=-1), wide)
