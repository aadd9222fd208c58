"""Sparse Time Series Encoder (labs; tokenised vitals).

Each event is E_val[value token] * E_item[item token] (elementwise). The products are summed per
(sample, window) with index_add (no padding, so no batch dependence), turned into CUMULATIVE window
means, and joined per window by (a) the mean of the items' LAST value tokens as of that window end and
(b) three window features: elapsed fraction of the window at the prediction time, log event count, any
data yet. A 2-layer BiLSTM runs over the windows; its final states of both directions plus the explicit
elapsed-time features (and, with `last_dim`, a small embedding of every item's current value token in
its own slot) go through an MLP. The per-window BiLSTM outputs are this modality's token sequence
for the bi-modal attention.

`accumulate` (per-window, non-cumulative sums) and `from_accumulators` are split so that the streaming
state (model/incremental.py) can keep the sums and add new events in O(new events).
"""
from __future__ import annotations

import torch
from torch import nn

from model.blocks import mlp

N_TFEAT = 2


class SparseEncoder(nn.Module):
    def __init__(self, n_values: int, n_items: int, n_windows: int, d: int, layers: int, dropout: float,
                 norm: str = "batch", last_dim: int = 0):
        super().__init__()
        self.n_windows, self.d = n_windows, d
        self.val = nn.Embedding(n_values, d, padding_idx=0)
        self.item = nn.Embedding(n_items, d, padding_idx=0)
        nn.init.normal_(self.val.weight, 0.0, 1.0)
        nn.init.normal_(self.item.weight, 1.0, 0.1)  # near 1: the product starts close to the value embedding
        with torch.no_grad():
            self.val.weight[0].zero_()
            self.item.weight[0].zero_()
        self.empty = nn.Parameter(torch.zeros(d))
        self.lstm = nn.LSTM(2 * d + 3, d // 2, num_layers=layers, batch_first=True, bidirectional=True,
                            dropout=dropout if layers > 1 else 0.0)
        # current value of every item, each in its own slot (the window means blur items together)
        self.last_val = nn.Embedding(n_values, last_dim, padding_idx=0) if last_dim else None
        self.out = mlp(d + N_TFEAT + n_items * last_dim, [d], dropout, norm)
        self.d_out = self.d_tok = d

    def event_embeddings(self, val: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return self.val(val) * self.item(item)

    def accumulate(self, sp: dict[str, torch.Tensor], batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-window sums (B, W, d) and counts (B, W) of the event embeddings (not yet cumulative)."""
        w, d = self.n_windows, self.d
        e = self.event_embeddings(sp["val"], sp["item"])
        sums = torch.zeros(batch_size * w, d, device=e.device, dtype=e.dtype).index_add_(0, sp["seg"], e)
        counts = torch.zeros(batch_size * w, device=e.device, dtype=e.dtype).index_add_(
            0, sp["seg"], torch.ones_like(sp["seg"], dtype=e.dtype))
        return sums.view(batch_size, w, d), counts.view(batch_size, w)

    def from_accumulators(self, sums, counts, last, frac, tfeat):
        csum, ccount = sums.cumsum(1), counts.cumsum(1)
        has = (ccount > 0).unsqueeze(-1)
        mean = torch.where(has, csum / ccount.clamp(min=1.0).unsqueeze(-1), self.empty)
        lm = (last > 0).to(sums.dtype)
        last_e = self.val(last) * self.item.weight  # (B, W, I, d): column i is item token i
        last_mean = (last_e * lm.unsqueeze(-1)).sum(2) / lm.sum(2).clamp(min=1.0).unsqueeze(-1)
        wfeat = torch.stack([frac, torch.log1p(ccount) / 5.0, has.squeeze(-1).to(sums.dtype)], dim=-1)
        out, (h, _) = self.lstm(torch.cat([mean, last_mean, wfeat], dim=-1))
        current = [self.last_val(last[:, -1]).flatten(1)] if self.last_val is not None else []
        pooled = self.out(torch.cat([h[-2], h[-1], tfeat, *current], dim=-1))
        mask = torch.ones(out.shape[:2], dtype=torch.bool, device=out.device)
        return pooled, out, mask

    def forward(self, sp: dict[str, torch.Tensor], tfeat: torch.Tensor):
        sums, counts = self.accumulate(sp, tfeat.shape[0])
        return self.from_accumulators(sums, counts, sp["last"], sp["frac"], tfeat)
