"""Static encoder: MLP on the standardised static vector (gender, age, height, weight with missing flags,
one-hot admission type / location / first care unit) plus the elapsed-time features."""
from __future__ import annotations

import torch
from torch import nn

from model.blocks import mlp
from model.sparse import N_TFEAT


class StaticEncoder(nn.Module):
    def __init__(self, n_static: int, d: int, dropout: float, norm: str = "batch"):
        super().__init__()
        self.net = mlp(n_static + N_TFEAT, [d, d], dropout, norm)
        self.d_out = self.d_tok = d

    def forward(self, static: torch.Tensor, tfeat: torch.Tensor):
        h = self.net(torch.cat([static, tfeat], dim=-1))
        return h, h.unsqueeze(1), torch.ones(h.shape[0], 1, dtype=torch.bool, device=h.device)
