"""The network's inputs: one stay at one prediction time as numpy arrays (StayInputs, picklable and
cacheable), and many of them collated into the tensors of one forward pass (Batch). model/features.py
turns canonical events into StayInputs; the dense vitals grid is built here, at collate time, from the
compact observation list (see features.py's docstring)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Sequence

import numpy as np
import torch

from model.config import ModelConfig


def hours(a: datetime, b: datetime) -> float:
    return (a - b).total_seconds() / 3600.0


@dataclass
class SparseInputs:
    """One sparse group of one stay at one prediction time."""

    val: np.ndarray    # (n,) int32 value token (>= 1)
    item: np.ndarray   # (n,) int32 item token (>= 1)
    win: np.ndarray    # (n,) int16 window index
    last: np.ndarray   # (W, I) int32 last value token per item as of each window end, 0 = none yet
    frac: np.ndarray   # (W,) float32 elapsed fraction of each window at `at`


@dataclass
class StayInputs:
    """Everything the network needs for one stay at one prediction time (numpy, picklable, cacheable)."""

    elapsed_h: float
    static: np.ndarray                  # (S,) float32
    has_static: bool
    sparse: dict[str, SparseInputs]
    vit_age: np.ndarray                 # (n,) float32 hours before `at` of each vitals observation
    vit_c: np.ndarray                   # (n,) int8 channel (index into cfg.vital_concepts)
    vit_z: np.ndarray                   # (n,) float32 standardised value
    vit_in_grid: np.ndarray             # (n,) bool: False = last value from before the grid (carry only)
    ecg_sig: np.ndarray                 # (E, 12, L) float32
    ecg_meas: np.ndarray                # (E, 2*9) float32 z-scores then missing flags
    ecg_stmt: list[np.ndarray]          # E arrays of statement tokens (>= 1)
    ecg_win: np.ndarray                 # (E,) int16 macro window
    n_unknown: int = 0

    @property
    def present(self) -> dict[str, bool]:
        return {
            "static": self.has_static,
            **{g: len(s.val) > 0 for g, s in self.sparse.items()},
            "vitals": len(self.vit_c) > 0,
            "ecg": len(self.ecg_win) > 0,
        }


@dataclass
class Batch:
    """Collated tensors for one forward pass. Token-level data are flat with a sample index, so nothing
    is padded except the per-ECG token matrix, which carries a mask."""

    size: int
    elapsed_h: torch.Tensor             # (B,)
    tfeat: torch.Tensor                 # (B, 2)
    present: dict[str, torch.Tensor]    # name -> (B,) bool
    static: torch.Tensor                # (B, S)
    sparse: dict[str, dict[str, torch.Tensor]]
    vitals: torch.Tensor                # (B, 2C, T)
    ecg: dict[str, torch.Tensor]

    def to(self, device) -> Batch:
        def mv(x):
            if isinstance(x, torch.Tensor):
                return x.to(device, non_blocking=True)
            if isinstance(x, dict):
                return {k: mv(v) for k, v in x.items()}
            return x

        return Batch(self.size, *(mv(getattr(self, f)) for f in
                                  ("elapsed_h", "tfeat", "present", "static", "sparse", "vitals", "ecg")))


def time_features(elapsed_h: np.ndarray | torch.Tensor):
    """The explicit elapsed-time input: linear (saturating at 3 days) and log scale."""
    if isinstance(elapsed_h, torch.Tensor):
        return torch.stack([elapsed_h.clamp(max=72.0) / 48.0, torch.log1p(elapsed_h) / math.log1p(48.0)], dim=-1)
    e = np.asarray(elapsed_h, dtype=np.float32)
    return np.stack([np.minimum(e, 72.0) / 48.0, np.log1p(e) / np.float32(math.log1p(48.0))], axis=-1)


def vitals_grid(cfg: ModelConfig, s: StayInputs) -> np.ndarray:
    """(2C, T) grid: carried-forward z-scores, then observed-in-step flags. See model/features.py's docstring."""
    return vitals_grids(cfg, np.zeros(len(s.vit_c), dtype=np.int64), s.vit_age, s.vit_c, s.vit_z, s.vit_in_grid, 1)[0]


def vitals_grids(cfg: ModelConfig, stay: np.ndarray, age: np.ndarray, c: np.ndarray, z: np.ndarray,
                 in_grid: np.ndarray, n_stays: int) -> np.ndarray:
    """(n_stays, 2C, T): `vitals_grid` of many stays at once, from their observations concatenated (each
    with its `stay` index, in each stay's own order). A (stay, channel) pair is one row of one grid, so a
    batch costs a few numpy calls instead of a few per stay."""
    n_c, step = len(cfg.vital_concepts), cfg.vitals_step_min / 60.0
    n_t = int(round(cfg.vitals_hours / step))
    rows = n_stays * n_c
    grid = np.zeros((2, rows, n_t), dtype=np.float32)
    if len(c):
        # step k covers ages (hours before `at`) in (A_k - step, A_k] with A_k = (n_t - 1 - k) * step ... as
        # times: step k ends at t_k = (k + 1) * step - vitals_hours relative to `at`.
        ends = (np.arange(n_t) + 1) * step - cfg.vitals_hours
        t = -np.asarray(age).astype(np.float64)
        row = np.asarray(stay, dtype=np.int64) * n_c + np.asarray(c, dtype=np.int64)
        order = np.lexsort((t, row))  # by row, then time; stable, so ties keep their arrival order
        t, row, z, in_grid = t[order], row[order], z[order], in_grid[order]
        # An observation counts from the first step whose end it is at or before, and is inside the steps from
        # there to the first whose start it is at or before: integer step indices, compared exactly as before.
        first = np.searchsorted(ends + 1e-9, t, side="left")
        past = np.maximum(np.searchsorted(ends - step + 1e-9, t, side="left"), first)
        # carried forward: per (row, step) the last observation, in the order above, counted by then. Each
        # cell's last observation goes in, then each row carries its latest index forward.
        cell = row * (n_t + 1) + first  # never falls along that order
        last = np.r_[cell[1:] != cell[:-1], True]
        latest = np.full(rows * (n_t + 1), -1)
        latest[cell[last]] = np.flatnonzero(last)
        latest = np.maximum.accumulate(latest.reshape(rows, n_t + 1), axis=1)[:, :n_t]
        grid[0] = np.where(latest >= 0, z[latest], 0.0)
        # observed in the step: in-grid observations, each over its steps [first, past)
        inside = np.zeros((rows, n_t + 1), dtype=np.int64)
        np.add.at(inside, (row[in_grid], first[in_grid]), 1)
        np.add.at(inside, (row[in_grid], past[in_grid]), -1)
        grid[1] = np.cumsum(inside, axis=1)[:, :n_t] > 0
    return np.ascontiguousarray(grid.reshape(2, n_stays, n_c, n_t).transpose(1, 0, 2, 3)).reshape(n_stays, 2 * n_c, n_t)


def collate(items: Sequence[StayInputs], cfg: ModelConfig | None = None) -> Batch:
    if not items:
        raise ValueError("collate needs at least one StayInputs")
    cfg = cfg or ModelConfig()
    b = len(items)
    elapsed = np.asarray([s.elapsed_h for s in items], dtype=np.float32)
    present = {name: torch.tensor([s.present[name] for s in items]) for name in items[0].present}
    sparse = {}
    for g in items[0].sparse:
        n_w = len(items[0].sparse[g].frac)
        seg = np.concatenate([i * n_w + s.sparse[g].win.astype(np.int64) for i, s in enumerate(items)])
        sparse[g] = {
            "val": torch.from_numpy(np.concatenate([s.sparse[g].val for s in items]).astype(np.int64)),
            "item": torch.from_numpy(np.concatenate([s.sparse[g].item for s in items]).astype(np.int64)),
            "seg": torch.from_numpy(seg),
            "last": torch.from_numpy(np.stack([s.sparse[g].last for s in items]).astype(np.int64)),
            "frac": torch.from_numpy(np.stack([s.sparse[g].frac for s in items])),
        }
    n_e = [len(s.ecg_win) for s in items]
    stmts = [t for s in items for t in s.ecg_stmt]
    slot = np.concatenate([np.arange(n) for n in n_e]) if sum(n_e) else np.zeros(0, dtype=np.int64)
    ecg = {
        "sig": torch.from_numpy(np.concatenate([s.ecg_sig for s in items]).astype(np.float32)),
        "meas": torch.from_numpy(np.concatenate([s.ecg_meas for s in items]).astype(np.float32)),
        "stmt": torch.from_numpy(np.concatenate(stmts).astype(np.int64) if stmts else np.zeros(0, dtype=np.int64)),
        "stmt_off": torch.from_numpy(np.cumsum([0] + [len(t) for t in stmts[:-1]]).astype(np.int64)) if stmts
        else torch.zeros(0, dtype=torch.long),
        "sample": torch.from_numpy(np.repeat(np.arange(b), n_e).astype(np.int64)),
        "win": torch.from_numpy(np.concatenate([s.ecg_win for s in items]).astype(np.int64)),
        "slot": torch.from_numpy(slot.astype(np.int64)),
        "max_len": torch.tensor(max(max(n_e), 1)),
    }
    return Batch(
        size=b,
        elapsed_h=torch.from_numpy(elapsed),
        tfeat=torch.from_numpy(time_features(elapsed).astype(np.float32)),
        present=present,
        static=torch.from_numpy(np.stack([s.static for s in items])),
        sparse=sparse,
        vitals=torch.from_numpy(vitals_grids(cfg, np.repeat(np.arange(b), [len(s.vit_c) for s in items]),
                                             *(np.concatenate([getattr(s, k) for s in items])
                                               for k in ("vit_age", "vit_c", "vit_z", "vit_in_grid")), b)),
        ecg=ecg,
    )
