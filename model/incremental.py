"""Incremental (streaming) encoder state of ICU stays: add new events in O(new events), score any time.

Per stay the state keeps
* per sparse group: per-window (non-cumulative) sums and counts of the event embeddings, the last value
  token per (window, item) and its clinical time, and the per-item summaries (count, rank sum, lowest and
  highest value token): a new lab adds its embedding to one window and merges into its item's summary; the
  cumulative means, the BiLSTM over the W windows and the MLPs are rerun at scoring time (W is small);
* dense vitals: the observations inside the last `vitals_hours` plus the latest older one per channel
  (bounded: older ones can never matter again), from which the 6-minute grid is rebuilt at scoring time;
* ECG: the cached micro-level embedding of each ECG (one ResNet pass per new ECG), most recent
  `max_ecgs` kept; the macro window pooling and ResNet are rerun at scoring time;
* the static vector, the admission time and the ids of events already applied (redelivery is a no-op).

`score(states, ats)` runs the rest of the network for many stays in one batched pass and equals the
full recompute from raw events (`model(collate([featurizer.encode(events, at)]))`) up to float rounding;
tests/model/test_model_streaming.py checks that. The state is only valid for the model version that built it.
The worker's MedM2T scorer (stream/scorers/medm2t.py) scores this way: it keeps one state per stay in an LRU cache
and applies each micro-batch's new events to it.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Iterable, Sequence

import numpy as np
import torch

from medm2t.events import Ecg, Measurement, StayOpened, _Event
from model.features import SPARSE_GROUPS
from model.inputs import hours, time_features, vitals_grids


@dataclass
class StayState:
    admit: datetime | None
    static: np.ndarray
    has_static: bool
    sums: dict[str, np.ndarray]          # group -> (W, d) float32
    counts: dict[str, np.ndarray]        # group -> (W,) float32
    last: dict[str, np.ndarray]          # group -> (W, I) int64
    last_time: dict[str, np.ndarray]     # group -> (W, I) float64 hours, -inf = none
    summary: dict[str, np.ndarray | None]  # group -> (I, 4) per-item summary accumulators (SparseEncoder)
    vit: np.ndarray                      # (n, 4): avail h, time h, channel, z; by avail, then time (stable)
    ecg_avail: list[float] = field(default_factory=list)
    ecg_time: list[float] = field(default_factory=list)
    ecg_emb: list[torch.Tensor] = field(default_factory=list)
    seen: set[str] = field(default_factory=set)
    pending: list[_Event] = field(default_factory=list)  # events before the StayOpened arrived
    n_unknown: int = 0

    @property
    def present(self) -> dict[str, bool]:
        """Which modalities have data (as StayInputs.present)."""
        return {"static": self.has_static, **{g: bool(c.any()) for g, c in self.counts.items()},
                "vitals": len(self.vit) > 0, "ecg": bool(self.ecg_emb)}


@dataclass(frozen=True)
class _Tables:
    """One sparse encoder's lookup tables as numpy arrays. An update adds a handful of events, and numpy does
    that in microseconds where each torch op costs tens of them; the sums are the encoder's own
    `event_embeddings` and `summary_accumulate` (tests/model/test_model_streaming.py)."""
    edges: np.ndarray            # interior window edges, hours
    val: np.ndarray              # (n_values, d) value embeddings
    item: np.ndarray             # (n_items, d) item embeddings
    rank: np.ndarray | None      # value token -> rank within its item (< 0: not numeric); None: no summaries

    @classmethod
    def of(cls, enc, edges) -> _Tables:
        rank = enc.value_rank.cpu().numpy() if enc.summary else None
        # copies: the tables are the weights as of now, on CPU and CUDA alike (build the encoder after loading)
        return cls(np.asarray(edges, dtype=np.float64), enc.val.weight.detach().cpu().numpy().copy(),
                   enc.item.weight.detach().cpu().numpy().copy(), rank)

    def empty_summary(self) -> np.ndarray | None:
        """(I, 4): count, sum of value ranks, lowest and highest value token of no events yet."""
        if self.rank is None:
            return None
        acc = np.zeros((len(self.item), 4), dtype=np.float32)
        acc[:, 2], acc[:, 3] = np.inf, -np.inf
        return acc


class IncrementalEncoder:
    """Owns no per-stay data: states are plain objects the caller keeps (e.g. per stay in the worker)."""

    def __init__(self, model, featurizer):
        self.model, self.featurizer, self.cfg = model.eval(), featurizer, featurizer.cfg
        self.device = next(model.parameters()).device
        self.spec = featurizer.spec()
        self.groups = [g for g in SPARSE_GROUPS if g in model.encoders]  # the sparse groups this model reads
        self.tables = {g: _Tables.of(model.encoders[g], featurizer.edges[g]) for g in self.groups}

    def new_state(self, opened: StayOpened | None = None) -> StayState:
        f, spec = self.featurizer, self.spec
        static, has_static = f._static_vector(opened)
        sums, counts, last, last_time, summary = {}, {}, {}, {}, {}
        for g in self.groups:
            w, d = spec["windows"][g], self.model.encoders[g].d
            summary[g] = self.tables[g].empty_summary()
            sums[g] = np.zeros((w, d), dtype=np.float32)
            counts[g] = np.zeros(w, dtype=np.float32)
            last[g] = np.zeros((w, spec["n_items"][g]), dtype=np.int64)
            last_time[g] = np.full((w, spec["n_items"][g]), -np.inf)
        return StayState(opened.time if opened else None, static, has_static, sums, counts, last, last_time,
                         summary, np.zeros((0, 4)))

    @torch.inference_mode()
    def update(self, state: StayState, events: Iterable[_Event]) -> StayState:
        new = [e for e in events if e.event_id not in state.seen]
        state.seen.update(e.event_id for e in new)
        for e in new:
            if isinstance(e, StayOpened):
                state.static, state.has_static = self.featurizer._static_vector(e)
                state.admit = e.time
        if state.admit is None:  # no admission time yet: nothing can be placed in time
            state.pending.extend(new)
            return state
        new, state.pending = state.pending + new, []
        prep = self.featurizer.prepare([e for e in new if isinstance(e, (Measurement, Ecg))], admit=state.admit)
        state.n_unknown += prep.n_unknown
        for g in self.groups:
            self._add_sparse(state, g, prep.groups[g])
        if len(prep.vit_c):
            rows = np.stack([prep.vit_avail, prep.vit_time, prep.vit_c.astype(np.float64), prep.vit_z], axis=1)
            vit = np.concatenate([state.vit, rows])
            state.vit = self._prune_vitals(vit[np.lexsort((vit[:, 1], vit[:, 0]))])
        if len(prep.ecg_avail) and "ecg" in self.model.encoders:  # a model without ECG encoder ignores ECGs
            ecg = self.model.encoders["ecg"]
            batch = {"sig": torch.from_numpy(prep.ecg_sig).to(self.device),
                     "meas": torch.from_numpy(prep.ecg_meas).to(self.device),
                     "stmt": torch.from_numpy(np.concatenate(prep.ecg_stmt).astype(np.int64)).to(self.device),
                     "stmt_off": torch.tensor(np.cumsum([0] + [len(t) for t in prep.ecg_stmt[:-1]]), device=self.device)}
            emb = ecg.embed(batch)
            state.ecg_avail += prep.ecg_avail.tolist()
            state.ecg_time += prep.ecg_time.tolist()
            state.ecg_emb += list(emb.unbind(0))
            order = sorted(range(len(state.ecg_avail)), key=lambda i: state.ecg_avail[i])[-self.cfg.max_ecgs:]
            state.ecg_avail = [state.ecg_avail[i] for i in order]
            state.ecg_time = [state.ecg_time[i] for i in order]
            state.ecg_emb = [state.ecg_emb[i] for i in order]
        return state

    @staticmethod
    def snapshot(state: StayState) -> StayState:
        """A copy of `state` as of now, for `score` only: later updates of `state` do not reach it. It copies
        what `update` changes in place (window sums and counts, last tokens, summaries, the ECG and pending
        lists) and shares what `update` replaces (vitals, the static vector), and the ids already applied
        (`score` does not read them; do not update a snapshot)."""
        copy = lambda arrays: {g: None if a is None else a.copy() for g, a in arrays.items()}  # noqa: E731
        return replace(state, sums=copy(state.sums), counts=copy(state.counts), last=copy(state.last),
                       last_time=copy(state.last_time), summary=copy(state.summary),
                       ecg_avail=list(state.ecg_avail), ecg_time=list(state.ecg_time),
                       ecg_emb=list(state.ecg_emb), pending=list(state.pending))

    def _add_sparse(self, state: StayState, g: str, pg) -> None:
        if not len(pg.val):
            return
        tab = self.tables[g]
        win = np.searchsorted(tab.edges, pg.time, side="right")
        val, item = pg.val.astype(np.intp), pg.item.astype(np.intp)
        np.add.at(state.sums[g], win, tab.val[val] * tab.item[item])
        state.counts[g] += np.bincount(win, minlength=len(state.counts[g]))
        if tab.rank is not None:
            rank = tab.rank[val]
            ok = rank >= 0
            acc, it, tok = state.summary[g], item[ok], val[ok].astype(np.float32)
            np.add.at(acc[:, 0], it, 1.0)
            np.add.at(acc[:, 1], it, rank[ok])
            np.minimum.at(acc[:, 2], it, tok)
            np.maximum.at(acc[:, 3], it, tok)
        self._update_last(state.last[g], state.last_time[g], win, pg)

    @staticmethod
    def _update_last(last: np.ndarray, last_time: np.ndarray, win: np.ndarray, pg) -> None:
        """The last value token per (window, item) as of each window's end: the latest clinical time wins,
        ties go to the later arrival, and an event replaces the state's token unless that one is later.
        `last_time` never falls from one window to the next, so per cell only the newest event of the item
        in that window or an earlier one can matter."""
        order = np.argsort(pg.time, kind="stable")  # by clinical time, then arrival: position = precedence
        items, column = np.unique(pg.item, return_inverse=True)  # only the items that came: O(new events)
        newest = np.full((last.shape[0], len(items)), -1)
        np.maximum.at(newest, (win[order], column[order]), np.arange(len(order)))
        newest = np.maximum.accumulate(newest, axis=0)
        t = pg.time[order][newest]
        tokens, times = last[:, items], last_time[:, items]
        upd = (newest >= 0) & (times <= t)
        tokens[upd], times[upd] = pg.val[order][newest][upd], t[upd]
        last[:, items], last_time[:, items] = tokens, times

    def _prune_vitals(self, vit: np.ndarray) -> np.ndarray:
        horizon = vit[:, 0].max() - self.cfg.vitals_hours
        old = vit[:, 1] < horizon
        if not old.any():
            return vit
        keep = ~old
        for c in np.unique(vit[old, 2]):
            idx = np.flatnonzero(old & (vit[:, 2] == c))
            keep[idx[np.argsort(vit[idx, 1], kind="stable")[-1]]] = True
        return vit[keep]

    def vitals_grids(self, states: Sequence[StayState], at_h: np.ndarray) -> np.ndarray:
        """(B, 2C, T): the vitals grids of many stays at their times, as `Featurizer.encode_prepared` and
        `vitals_grid` build them one stay at a time: per stay, the rows available by then in (available,
        clinical time) order (the order `update` keeps them in), those inside the grid's span plus each
        channel's latest one before it."""
        n_c = len(self.cfg.vital_concepts)
        v = np.concatenate([s.vit for s in states])
        stay = np.repeat(np.arange(len(states)), [len(s.vit) for s in states])
        ok = v[:, 0] <= at_h[stay]
        v, stay = v[ok], stay[ok]
        row = stay * n_c + v[:, 2].astype(np.int64)  # one grid row per (stay, channel)
        age, row, z, in_grid = self.featurizer._vitals_window(v[:, 1], row, v[:, 3].astype(np.float32), at_h[stay])
        return vitals_grids(self.cfg, row // n_c, age, row % n_c, z, in_grid, len(states))

    @torch.inference_mode()
    def score(self, states: Sequence[StayState], ats: Sequence[datetime],
              wide: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Model outputs (same dict as MedM2T.forward) for many stays at their prediction times, in one pass.
        Assumes every event already applied to a state is available by its `at` (the streaming case).
        `wide`: the states' `wide_inputs`, when the caller has them already."""
        m, f, dev = self.model, self.featurizer, self.device
        at_h = np.asarray([max(0.0, hours(at, s.admit)) if s.admit else 0.0 for s, at in zip(states, ats)])
        tfeat = torch.from_numpy(time_features(at_h).astype(np.float32)).to(dev)
        elapsed = torch.from_numpy(at_h.astype(np.float32)).to(dev)
        b = len(states)
        enc = {}
        present = {name: torch.tensor([s.present[name] for s in states], device=dev) for name in m.modalities}
        static = torch.from_numpy(np.stack([s.static for s in states])).to(dev)
        if "static" in m.encoders:
            enc["static"] = m.encoders["static"](static, tfeat)
        for g in self.groups:
            stacked = lambda part: torch.from_numpy(np.stack([getattr(s, part)[g] for s in states])).to(dev)  # noqa: E731
            frac = torch.from_numpy(f.window_fractions(g, at_h)).to(dev)
            # summaries are off in the paper preset (item_summary=False): states hold None
            summary = stacked("summary") if m.encoders[g].summary else None
            enc[g] = m.encoders[g].from_accumulators(stacked("sums"), stacked("counts"), stacked("last"), frac, tfeat,
                                                     summary, elapsed)
        if "vitals" in m.encoders:
            enc["vitals"] = m.encoders["vitals"](torch.from_numpy(self.vitals_grids(states, at_h)).to(dev), tfeat)
        if "ecg" in m.encoders:
            edges = np.asarray(f.edges["ecg"])
            embs, sample, win, slot = [], [], [], []
            for i, s in enumerate(states):
                embs += s.ecg_emb
                sample += [i] * len(s.ecg_emb)
                win += np.searchsorted(edges, np.asarray(s.ecg_time), side="right").tolist()
                slot += list(range(len(s.ecg_emb)))
            d = m.encoders["ecg"].micro.d_out
            emb = torch.stack(embs) if embs else torch.zeros(0, d, device=dev)
            lt = lambda x: torch.tensor(x, dtype=torch.long, device=dev)  # noqa: E731
            enc["ecg"] = m.encoders["ecg"].from_embeddings(emb, lt(sample), lt(win), lt(slot),
                                                           max(max(len(s.ecg_emb) for s in states), 1), b, tfeat)
        return m.fusion(enc, present, tfeat, self.wide_inputs(states) if wide is None else wide)

    @torch.inference_mode()
    def wide_inputs(self, states: Sequence[StayState]) -> torch.Tensor | None:
        """The wide head's inputs (B, D) of many stays (None without a wide head), as `score` builds them."""
        m = self.model
        static = torch.from_numpy(np.stack([s.static for s in states])).to(self.device)
        summary = {g: (torch.from_numpy(np.stack([s.summary[g] for s in states])).to(self.device),
                       torch.from_numpy(np.stack([s.last[g][-1] for s in states])).to(self.device))
                   for g in self.groups if m.encoders[g].summary}
        return m.wide_inputs(static, summary)
