"""Building blocks shared by the encoders and the fusion.

Normalisation is chosen per preset (`ModelConfig.norm`): "layer" (LayerNorm after Linear, GroupNorm with
one group after a convolution: per-sample, so training and eval mode compute the same thing) or "batch" (the
reference's BatchNorm; eval mode uses running statistics, so eval outputs are still batch-invariant, but on
landmark prefixes the running statistics are fragile and need re-estimation, see
model/stages.py recalibrate_batchnorm)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from medm2t.vocabulary import CVD_90D, LOS_REMAINING, MORTALITY


NORMS = ("layer", "batch", "none")


def _check_norm(norm: str | None) -> None:
    if norm is not None and norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose one of {', '.join(NORMS)}")


def norm1d(kind: str | None, width: int) -> list[nn.Module]:
    """The normalisation after a Linear layer of `width` outputs ([] for none)."""
    _check_norm(kind)
    return {"layer": [nn.LayerNorm(width)], "batch": [nn.BatchNorm1d(width)]}.get(kind or "none", [])


def norm_conv(kind: str | None, channels: int) -> nn.Module:
    """The normalisation after a convolution over ResNet1d's (B, C, 1, L) layout."""
    _check_norm(kind)
    if kind == "batch":
        return nn.BatchNorm2d(channels)  # the same parameters and state as BatchNorm1d over (B, C, L)
    return nn.GroupNorm(1, channels) if kind == "layer" else nn.Identity()


class Conv1d(nn.Conv1d):
    """nn.Conv1d (same parameters and checkpoints) applied to (B, C, 1, L) in channels-last memory order, as
    a 2-D convolution. oneDNN's kernels are several times faster in that layout for the many short
    sequences here: the dense vitals' 3,072 segments of 24 steps at batch 128 took 7.2 ms in one
    convolution as (B, C, L) and 1.0 ms as channels-last (B, C, 1, L), with the same output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.conv2d(x, self.weight.unsqueeze(2), self.bias, (1, self.stride[0]), (0, self.padding[0]))


def mlp(d_in: int, hidden: Sequence[int], dropout: float, norm: str | None = "batch") -> nn.Sequential:
    """Linear -> [norm] -> ReLU -> Dropout per hidden width (no final linear layer), as the reference MLP."""
    layers: list[nn.Module] = []
    for h in hidden:
        layers += [nn.Linear(d_in, h)] + norm1d(norm, h) + [nn.ReLU()] + ([nn.Dropout(dropout)] if dropout > 0 else [])
        d_in = h
    return nn.Sequential(*layers)


class ResNet1d(nn.Module):
    """1-D residual network over (B, C, L): a strided stem, then one residual unit per (channels, length)
    block that downsamples by max-pool on the skip path and a strided conv on the main path. Inside, the
    sequence runs as (B, C, 1, L) in channels-last order (see Conv1d); the output is (B, C * L) as before."""

    def __init__(self, in_ch: int, in_len: int, blocks: Sequence[tuple[int, int]], kernel: int, dropout: float,
                 norm: str = "batch"):
        super().__init__()
        (c0, l0), rest = blocks[0], blocks[1:]
        if in_len % l0:
            raise ValueError(f"input length {in_len} is not a multiple of the first block length {l0}")
        s0 = in_len // l0
        self.stem = nn.Sequential(Conv1d(in_ch, c0, kernel, stride=s0, padding=kernel // 2, bias=False),
                                  norm_conv(norm, c0), nn.ReLU())
        units = []
        c, length = c0, l0
        for c_out, l_out in rest:
            if length % l_out:
                raise ValueError(f"block length {length} is not a multiple of {l_out}")
            units.append(_ResUnit(c, c_out, kernel, length // l_out, dropout, norm))
            c, length = c_out, l_out
        self.units = nn.ModuleList(units)
        self.out_dim = c * length

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x.unsqueeze(2).contiguous(memory_format=torch.channels_last))
        for u in self.units:
            x = u(x)
        return x.flatten(1)


class _ResUnit(nn.Module):
    def __init__(self, c_in: int, c_out: int, kernel: int, down: int, dropout: float, norm: str):
        super().__init__()
        self.conv1 = Conv1d(c_in, c_out, kernel, padding=kernel // 2, bias=False)
        self.bn1 = norm_conv(norm, c_out)
        self.conv2 = Conv1d(c_out, c_out, kernel, stride=down, padding=kernel // 2, bias=False)
        self.bn2 = norm_conv(norm, c_out)
        self.skip = nn.Sequential(
            *([nn.MaxPool2d((1, down))] if down > 1 else []),
            *([Conv1d(c_in, c_out, 1, bias=False)] if c_in != c_out else []),
        )
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x):
        y = self.drop(torch.relu(self.bn1(self.conv1(x))))
        y = self.conv2(y)
        return self.drop(torch.relu(self.bn2(y + self.skip(x))))


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, L, D) over the valid positions of mask (B, L); zero where a row has none."""
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


def masked_softmax(scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Softmax of `scores` over the last dimension, over the keys where `valid` (broadcast) is True; a row
    without any valid key gets all zeros. Written out, not torch.softmax with -inf fills: on CPU, torch's
    softmax kernel is ~4x slower for rows this short (12-24 keys), and exp() of -inf or of anything whose
    result underflows is ~10x slower than of an ordinary number; together they were a fifth of the small
    preset's forward pass (`medm2t bench model`). Exponents are clamped at -80 (weights below e^-80, far below
    float32 resolution next to the row maximum's 1) and invalid keys are multiplied out."""
    top = scores.masked_fill(~valid, -1e9).amax(-1, keepdim=True)
    e = torch.exp((scores - top).clamp(-80.0, 0.0)) * valid
    return e / e.sum(-1, keepdim=True).clamp_min(1e-30)


class CrossAttention(nn.Module):
    """Transformer cross-attention block over PER-SAMPLE token sequences:
    q (B, Lq, E) attends to kv (B, Lk, E) with a key padding mask (B, Lk) (True = valid), then LN, FFN, LN.
    Softmax runs over each sample's own keys only, never across the batch (fixes reference bug B1).
    Written out instead of nn.MultiheadAttention so the masked path is identical in every batch shape."""

    def __init__(self, dim: int, heads: int, dropout: float, ffn_mult: int = 4):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.h, self.dh = heads, dim // heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.LeakyReLU(), nn.Linear(ffn_mult * dim, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, q: torch.Tensor, kv: torch.Tensor, kv_mask: torch.Tensor) -> torch.Tensor:
        b, lq, e = q.shape
        lk = kv.shape[1]
        qh = self.q(q).view(b, lq, self.h, self.dh).transpose(1, 2)
        kh = self.k(kv).view(b, lk, self.h, self.dh).transpose(1, 2)
        vh = self.v(kv).view(b, lk, self.h, self.dh).transpose(1, 2)
        scores = qh @ kh.transpose(-1, -2) / math.sqrt(self.dh)
        attn = masked_softmax(scores, kv_mask[:, None, None, :])  # a sample without any valid key attends to nothing
        a = (attn @ vh).transpose(1, 2).reshape(b, lq, e)
        x = self.ln1(q + self.drop(self.o(a)))
        return self.ln2(x + self.drop(self.ffn(x)))


class TaskHeads(nn.Module):
    """The three task outputs from one feature vector: mortality logit, remaining ICU LOS in days
    (softplus, so never negative) and 4 CVD logits. With `d_wide`, a linear term of a second "wide"
    input (tabular summaries) is added to every output before its link function (wide & deep)."""

    def __init__(self, d_in: int, hidden: int, dropout: float, norm: str = "batch", d_wide: int = 0):
        super().__init__()
        self.body = mlp(d_in, [hidden], dropout, norm) if hidden else nn.Identity()
        d = hidden or d_in
        self.mortality = nn.Linear(d, 1)
        self.los = nn.Linear(d, 1)
        self.cvd = nn.Linear(d, 4)
        self.wide = nn.Linear(d_wide, 6) if d_wide else None

    def forward(self, x: torch.Tensor, wide: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        h = self.body(x)
        raw = torch.cat([self.mortality(h), self.los(h), self.cvd(h)], dim=-1)
        if self.wide is not None:
            raw = raw + self.wide(wide)
        return {
            MORTALITY: raw[:, 0],
            LOS_REMAINING: nn.functional.softplus(raw[:, 1]),
            CVD_90D: raw[:, 2:],
        }
