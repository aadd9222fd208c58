"""Hierarchical ECG encoder.

Micro level (one ECG): ResNet1d on the preprocessed 12 x 640 signal -> MLP; MLP on the 9 machine
measurements (z-scores + missing flags); EmbeddingBag(mean) over the statement tokens -> MLP. The three are
fused per ECG by concatenation and an MLP. (The reference fuses them with bi-modal attention over three
single vectors, which is only non-degenerate because of its cross-batch bug B1: per sample, softmax over
one key is 1.) The micro MLPs use no BatchNorm so a single ECG is a valid training batch.

Macro level (one stay): per-ECG embeddings are averaged inside the time-offset windows (quantiles of
training ECG offsets), with a log-count channel, then a ResNet1d across windows and an MLP with the
elapsed-time features. The per-ECG embeddings, each placed with its own stay through `sample`/`slot`
(fixes reference bug B4), are the token sequence for the bi-modal attention.
"""
from __future__ import annotations

import torch
from torch import nn

from medm2t.events import ECG_MEASUREMENTS, LEADS
from model.blocks import ResNet1d, mlp
from model.sparse import N_TFEAT


class EcgMicro(nn.Module):
    def __init__(self, n_statements: int, cfg):
        super().__init__()
        p = cfg.ecg_dropout
        self.sig = ResNet1d(len(LEADS), cfg.ecg_len, cfg.ecg_resnet, cfg.ecg_kernel, p, cfg.norm)
        self.sig_mlp = mlp(self.sig.out_dim, [cfg.d_ecg_sig], p, norm=None)
        self.meas = mlp(2 * len(ECG_MEASUREMENTS), [cfg.d_ecg_meas], p, norm=None)
        self.text = nn.EmbeddingBag(n_statements + 1, cfg.d_ecg_text, mode="mean", padding_idx=0)
        self.text_mlp = mlp(cfg.d_ecg_text, [cfg.d_ecg_text], p, norm=None)
        self.fuse = mlp(cfg.d_ecg_sig + cfg.d_ecg_meas + cfg.d_ecg_text, [cfg.d_ecg_embed], p, norm=None)
        self.d_out = cfg.d_ecg_embed

    def forward(self, sig, meas, stmt, stmt_off) -> torch.Tensor:
        """(N, 12, L), (N, 18), flat statement tokens + offsets -> (N, d_ecg_embed)"""
        s = self.sig_mlp(self.sig(sig))
        t = self.text_mlp(self.text(stmt, stmt_off))
        return self.fuse(torch.cat([s, self.meas(meas), t], dim=-1))


class EcgEncoder(nn.Module):
    def __init__(self, n_statements: int, n_windows: int, cfg):
        super().__init__()
        self.micro = EcgMicro(n_statements, cfg)
        self.n_windows = n_windows
        d = cfg.d_ecg_embed
        lengths = [n_windows] * len(cfg.ecg_macro_channels)
        self.macro = ResNet1d(d + 1, n_windows, tuple(zip(cfg.ecg_macro_channels, lengths)), 3, cfg.ecg_dropout, cfg.norm)
        self.out = mlp(self.macro.out_dim + N_TFEAT, [cfg.d_ecg], cfg.ecg_dropout, cfg.norm)
        self.d_out, self.d_tok = cfg.d_ecg, d

    def embed(self, ecg: dict[str, torch.Tensor]) -> torch.Tensor:
        if ecg["sig"].shape[0] == 0:
            return ecg["sig"].new_zeros(0, self.micro.d_out)
        return self.micro(ecg["sig"], ecg["meas"], ecg["stmt"], ecg["stmt_off"])

    def from_embeddings(self, emb, sample, win, slot, max_len: int, batch_size: int, tfeat):
        w, d = self.n_windows, emb.shape[-1]
        seg = sample * w + win
        sums = emb.new_zeros(batch_size * w, d).index_add_(0, seg, emb)
        counts = emb.new_zeros(batch_size * w).index_add_(0, seg, torch.ones_like(seg, dtype=emb.dtype))
        means = sums / counts.clamp(min=1.0).unsqueeze(-1)
        x = torch.cat([means, torch.log1p(counts).unsqueeze(-1)], dim=-1).view(batch_size, w, d + 1)
        pooled = self.out(torch.cat([self.macro(x.transpose(1, 2)), tfeat], dim=-1))
        tok = emb.new_zeros(batch_size, max_len, d)
        mask = torch.zeros(batch_size, max_len, dtype=torch.bool, device=emb.device)
        tok[sample, slot] = emb
        mask[sample, slot] = True
        return pooled, tok, mask

    def forward(self, ecg: dict[str, torch.Tensor], tfeat: torch.Tensor):
        emb = self.embed(ecg)
        return self.from_embeddings(emb, ecg["sample"], ecg["win"], ecg["slot"], int(ecg["max_len"]),
                                    tfeat.shape[0], tfeat)
