"""Canonical events -> model inputs. Everything here is fitted on TRAINING stays only (model/feature_fit.py)
and saved in the checkpoint.

Design choices (the reference leaves most of them open, see medm2t-reference.md §2 and §7):

* Time is hours since the StayOpened time (ICU admission); never the Outcome (the model must not read it).
  `encode(events, at)` uses only events with available_time <= at, so a prefix at hour 6 sees exactly
  what a live worker would have seen at hour 6.
* Sparse items (labs = category 'lab', tokenised vitals = category 'vital') become (value token, item token)
  pairs. Numeric cut-points are event-level quantiles at 5, 15, ..., 95 % of the training values
  (`value_bins` = 11 intervals); event-level rather than the reference's per-subject means because the
  encoder sees individual values, and extreme values within a stay are the informative ones. Every item
  also has an 'other' token (text on a numeric item, unseen category). Items never seen in training are
  ignored and counted (`unknown_items`, one warning per item), never turned into NaN.
* Cumulative windows: window w holds every event up to the end of window w. Edges are quantiles of the
  training event times per group; the last window is open-ended. Each window also carries the fraction of
  it that has elapsed by `at` (the explicit elapsed-time signal), and per item the LAST value token as of
  the window end (a 'current state' stream next to the bag-of-tokens mean).
* Dense vitals: a 6-minute grid over the `vitals_hours` before `at` (relative to the prediction time so a
  streaming score at any hour sees a full-width recent history). Values are z-scored with training means,
  clipped to +-5, carried forward (last observation, also from before the grid) and 0 (= the training mean)
  before the first observation; a second channel per concept marks the steps with a real observation. The
  grid is built at collate time from the compact observation list so cached inputs stay small.
* ECG: missing leads -> zeros, NaN samples linearly interpolated, resampled to 125 Hz, 3rd-order
  Butterworth band-pass 0.5-40 Hz (zero-phase), centre crop of 640 samples (5.12 s). Machine measurements:
  sentinels (>= 29999) and non-finite values -> missing, z-scored, plus a missing flag each. Statements:
  lower-cased, vocabulary of the most frequent training statements, 'other' and 'no statement' tokens.
"""
from __future__ import annotations

import logging
import math
from bisect import bisect_right
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Sequence

import numpy as np

from medm2t.events import ECG_MEASUREMENTS, LEADS, Ecg, Measurement, StayOpened, _Event
from model.config import ModelConfig
from model.ecg_signal import preprocess_ecg
from model.inputs import SparseInputs, StayInputs, hours

log = logging.getLogger(__name__)

SPARSE_GROUPS: dict[str, str] = {"labs": "lab", "vitals_tok": "vital"}  # modality -> Measurement.category
ECG_SENTINEL_MIN = 29999.0
STATIC_NUMERIC = ("age", "height_cm", "weight_kg")
STATIC_CATEGORICAL = ("admission_type", "admission_location", "first_careunit")
CATEGORY_MAX = 50
Z_CLIP = 5.0
FEATURIZER_VERSION = 1


# ---------------------------------------------------------------- prepared stay ------------------


@dataclass
class _PreparedGroup:
    avail: np.ndarray   # hours, sorted ascending
    time: np.ndarray
    val: np.ndarray
    item: np.ndarray


@dataclass
class PreparedStay:
    """A stay's events turned into arrays once (the per-event Python work), so that encoding it at many
    prediction times is pure numpy slicing."""

    admit: datetime
    static: np.ndarray
    has_static: bool
    groups: dict[str, _PreparedGroup]
    vit_avail: np.ndarray
    vit_time: np.ndarray
    vit_c: np.ndarray
    vit_z: np.ndarray
    ecg_avail: np.ndarray
    ecg_time: np.ndarray
    ecg_sig: np.ndarray
    ecg_meas: np.ndarray
    ecg_stmt: list[np.ndarray]
    n_unknown: int = 0
    problems: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- the featurizer ----------------


@dataclass
class ItemTokens:
    group: str
    index: int              # item token within its group (>= 1)
    offset: int             # first value token of this item within its group
    cuts: list[float] | None  # numeric items
    categories: list[str] | None  # categorical items

    @property
    def n_tokens(self) -> int:
        n = len(self.cuts) + 1 if self.cuts is not None else len(self.categories)
        return n + 1  # + 'other'


class Featurizer:
    def __init__(self, cfg: ModelConfig, items: dict[str, ItemTokens], edges: dict[str, list[float]],
                 static_spec: dict, vitals_spec: dict, ecg_spec: dict):
        self.cfg = cfg
        self.items = items
        self.edges = edges                    # modality -> interior window edges (hours)
        self.static_spec = static_spec
        self.vitals_spec = vitals_spec
        self.ecg_spec = ecg_spec
        self.unknown_items: Counter = Counter()
        self._n_items = {g: 1 + sum(1 for it in items.values() if it.group == g) for g in SPARSE_GROUPS}
        self._n_vals = {g: 1 + sum(it.n_tokens for it in items.values() if it.group == g) for g in SPARSE_GROUPS}
        self._stmt_index = {s: i + 2 for i, s in enumerate(ecg_spec["statements"])}
        self._cat_index = {code: {c: k for k, c in enumerate(it.categories)} for code, it in items.items()
                           if it.categories is not None}

    # ---- sizes the network needs
    def spec(self) -> dict:
        return {
            "n_items": dict(self._n_items), "n_values": dict(self._n_vals), "n_static": self.n_static,
            "n_statements": len(self.ecg_spec["statements"]) + 2, "windows": {k: len(v) + 1 for k, v in self.edges.items()},
            "value_rank": {g: self.value_ranks(g) for g in SPARSE_GROUPS},
            "edges": {g: list(self.edges[g]) for g in SPARSE_GROUPS},  # interior window edges, hours
        }

    def value_ranks(self, group: str) -> list[float]:
        """Per value token of `group`: its bin's midpoint as a fraction of the item's bins (an approximate
        quantile of the training values), -1 for padding, category and 'other' tokens."""
        ranks = [-1.0] * self._n_vals[group]
        for it in self.items.values():
            if it.group == group and it.cuts is not None:
                n_bins = len(it.cuts) + 1
                for k in range(n_bins):
                    ranks[it.offset + k] = (k + 0.5) / n_bins
        return ranks

    @property
    def n_static(self) -> int:
        s = self.static_spec
        return 3 + 2 * len(STATIC_NUMERIC) + sum(len(s["vocab"][k]) + 1 for k in STATIC_CATEGORICAL)

    # ---- serialisation
    def to_dict(self) -> dict:
        return {
            "version": FEATURIZER_VERSION,
            "items": {k: {"group": v.group, "index": v.index, "offset": v.offset, "cuts": v.cuts,
                          "categories": v.categories} for k, v in self.items.items()},
            "edges": self.edges, "static": self.static_spec, "vitals": self.vitals_spec, "ecg": self.ecg_spec,
            "config": self.cfg.to_dict(),
        }

    @classmethod
    def from_dict(cls, d: dict) -> Featurizer:
        if d.get("version") != FEATURIZER_VERSION:
            raise ValueError(f"featurizer version {d.get('version')} is not {FEATURIZER_VERSION} (made by another model version)")
        items = {k: ItemTokens(**v) for k, v in d["items"].items()}
        return cls(ModelConfig.from_dict(d["config"]), items, d["edges"], d["static"], d["vitals"], d["ecg"])

    # ---- encoding
    def prepare(self, events: Sequence[_Event], admit: datetime | None = None) -> PreparedStay:
        """Per-event work, done once per stay. Unknown items are counted and skipped. `admit` defaults to
        the StayOpened time (incremental updates pass the stay's admission with only the new events)."""
        admit = admit or admission(events)
        opened = next((e for e in events if isinstance(e, StayOpened)), None)
        rows: dict[str, list[tuple[float, float, int, int]]] = {g: [] for g in SPARSE_GROUPS}
        vit_rows: list[tuple[float, float, int, float]] = []
        concept_index = {c: i for i, c in enumerate(self.cfg.vital_concepts)}
        ecgs: list[Ecg] = []
        n_unknown = 0
        problems: list[str] = []
        for e in events:
            if isinstance(e, Measurement):
                it = self.items.get(e.item)
                if it is None:
                    n_unknown += 1
                    if e.item not in self.unknown_items:
                        log.warning("item %r (stay %s) was never seen in training: ignored", e.item, e.stay_id)
                    self.unknown_items[e.item] += 1
                    continue
                avail, t = hours(e.available_time, admit), hours(e.time, admit)
                if e.value is not None and math.isfinite(e.value):
                    # bisect_right == np.searchsorted(cuts, value, side="right"), without numpy's per-call cost
                    tok = it.offset + (bisect_right(it.cuts, e.value) if it.cuts is not None else it.n_tokens - 1)
                    if e.concept in concept_index:
                        c = concept_index[e.concept]
                        vit_rows.append((avail, t, c, (e.value - self.vitals_spec["mean"][c]) / self.vitals_spec["std"][c]))
                elif e.text is not None:
                    if it.categories is not None:
                        k = self._cat_index[e.item].get(e.text.strip().lower(), len(it.categories))
                        tok = it.offset + k
                    else:
                        tok = it.offset + it.n_tokens - 1
                else:
                    problems.append(f"measurement {e.event_id} ({e.item}) has neither value nor text: ignored")
                    continue
                rows[it.group].append((avail, t, tok, it.index))
            elif isinstance(e, Ecg):
                ecgs.append(e)
        groups = {g: self._prepared_group(r) for g, r in rows.items()}
        vr = np.asarray(vit_rows, dtype=np.float64).reshape(-1, 4)
        vo = np.lexsort((vr[:, 1], vr[:, 0]))
        static, has_static = self._static_vector(opened)
        ecg_avail, ecg_time, sigs, meas, stmt = self._prepare_ecgs(ecgs, admit, problems)
        return PreparedStay(admit, static, has_static, groups, vr[vo, 0], vr[vo, 1], vr[vo, 2].astype(np.int8),
                            np.clip(vr[vo, 3], -Z_CLIP, Z_CLIP).astype(np.float32), ecg_avail, ecg_time, sigs, meas, stmt, n_unknown, problems)

    @staticmethod
    def _prepared_group(rows: list) -> _PreparedGroup:
        """One sparse group's rows as arrays, by available time, then clinical time (stable)."""
        arr = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        order = np.lexsort((arr[:, 1], arr[:, 0]))
        return _PreparedGroup(arr[order, 0], arr[order, 1], arr[order, 2].astype(np.int32), arr[order, 3].astype(np.int32))

    def encode(self, events: Sequence[_Event], at: datetime) -> StayInputs:
        return self.encode_prepared(self.prepare(events), at)

    def encode_many(self, events: Sequence[_Event], ats: Sequence[datetime]) -> list[StayInputs]:
        prep = self.prepare(events)
        return [self.encode_prepared(prep, at) for at in ats]

    def encode_prepared(self, prep: PreparedStay, at: datetime) -> StayInputs:
        at_h = max(0.0, hours(at, prep.admit))
        sparse = {g: self._encode_group(g, prep.groups[g], at_h) for g in SPARSE_GROUPS}
        k = int(np.searchsorted(prep.vit_avail, at_h, side="right"))
        vit_age, vit_c, vit_z, vit_in = self._vitals_window(prep.vit_time[:k], prep.vit_c[:k], prep.vit_z[:k], at_h)
        n_ecg = int(np.searchsorted(prep.ecg_avail, at_h, side="right"))
        lo = max(0, n_ecg - self.cfg.max_ecgs)
        ecg_win = np.searchsorted(np.asarray(self.edges["ecg"]), prep.ecg_time[lo:n_ecg], side="right").astype(np.int16)
        return StayInputs(
            elapsed_h=at_h, static=prep.static, has_static=prep.has_static, sparse=sparse,
            vit_age=vit_age, vit_c=vit_c, vit_z=vit_z, vit_in_grid=vit_in,
            ecg_sig=prep.ecg_sig[lo:n_ecg], ecg_meas=prep.ecg_meas[lo:n_ecg], ecg_stmt=prep.ecg_stmt[lo:n_ecg],
            ecg_win=ecg_win, n_unknown=prep.n_unknown,
        )

    def window_fractions(self, group: str, at_h: float | np.ndarray) -> np.ndarray:
        """(W,) elapsed fraction of each window at `at_h` hours; (B, W) for an array of B times."""
        e = np.asarray(self.edges[group], dtype=np.float64)
        lo = np.concatenate([[0.0], e])
        hi = np.concatenate([e, [e[-1] + max(e[-1] - (e[-2] if len(e) > 1 else 0.0), 1.0)]])
        at = np.asarray(at_h, dtype=np.float64)[..., None] if np.ndim(at_h) else at_h
        return np.clip((at - lo) / np.maximum(hi - lo, 1e-6), 0.0, 1.0).astype(np.float32)

    def _encode_group(self, g: str, pg: _PreparedGroup, at_h: float) -> SparseInputs:
        k = int(np.searchsorted(pg.avail, at_h, side="right"))
        time, val, item = pg.time[:k], pg.val[:k], pg.item[:k]
        n_w, n_i = len(self.edges[g]) + 1, self._n_items[g]
        win = np.searchsorted(np.asarray(self.edges[g]), time, side="right").astype(np.int16)
        last = np.zeros((n_w, n_i), dtype=np.int32)
        if k:
            order = np.argsort(time, kind="stable")  # last = latest clinical time, ties -> later arrival
            key = (win[order].astype(np.int64) * n_i + item[order])[::-1]
            uniq, first = np.unique(key, return_index=True)
            last.reshape(-1)[uniq] = val[order][::-1][first]
            for w in range(1, n_w):
                last[w] = np.where(last[w] > 0, last[w], last[w - 1])
        return SparseInputs(val, item, win, last, self.window_fractions(g, at_h))

    def _vitals_window(self, time, c, z, at_h):
        """Observations in the grid span plus, per channel, the last one before it (carried forward). `c` may
        be any key (the incremental scorer's is stay and channel in one, for many stays at their own `at_h`)."""
        age = (at_h - time).astype(np.float32)
        in_grid = age < self.cfg.vitals_hours
        before = np.flatnonzero(~in_grid)
        keep = np.flatnonzero(in_grid)
        if len(before):
            # latest pre-grid observation per channel (time-sorted within channel)
            b_order = before[np.lexsort((time[before], c[before]))]
            last_of_c = b_order[np.r_[c[b_order][1:] != c[b_order][:-1], True]]
            keep = np.concatenate([last_of_c, keep])
        return age[keep], c[keep], z[keep], in_grid[keep]

    def _static_vector(self, opened: StayOpened | None) -> tuple[np.ndarray, bool]:
        x = np.zeros(self.n_static, dtype=np.float32)
        if opened is None:
            x[2] = 1.0
            for i in range(len(STATIC_NUMERIC)):
                x[3 + 2 * i + 1] = 1.0
            return x, False
        st, s = opened.static, self.static_spec
        x[{"M": 0, "F": 1}.get(st.gender, 2)] = 1.0
        for i, k in enumerate(STATIC_NUMERIC):
            v = getattr(st, k)
            if v is not None and math.isfinite(v) and v > 0:
                x[3 + 2 * i] = np.clip((v - s["mean"][k]) / s["std"][k], -Z_CLIP, Z_CLIP)
            else:
                x[3 + 2 * i + 1] = 1.0
        pos = 3 + 2 * len(STATIC_NUMERIC)
        for k in STATIC_CATEGORICAL:
            vocab = s["vocab"][k]
            v = getattr(st, k)
            x[pos + (vocab.index(v) if v in vocab else len(vocab))] = 1.0 if v else 0.0
            pos += len(vocab) + 1
        return x, True

    def _prepare_ecgs(self, ecgs: list[Ecg], admit: datetime, problems: list[str]):
        cfg = self.cfg
        ecgs = sorted(ecgs, key=lambda e: (e.available_time, e.time, e.event_id))
        sigs = np.zeros((len(ecgs), len(LEADS), cfg.ecg_len), dtype=np.float32)
        meas = np.zeros((len(ecgs), 2 * len(ECG_MEASUREMENTS)), dtype=np.float32)
        stmt = []
        mean, std = self.ecg_spec["mean"], self.ecg_spec["std"]
        for n, e in enumerate(ecgs):
            sigs[n], probs = preprocess_ecg(e.waveform.to_array(), e.waveform.fs, e.waveform.leads, cfg.ecg_fs, cfg.ecg_len)
            problems.extend(f"ECG {e.event_id}: {p}" for p in probs)
            for i, k in enumerate(ECG_MEASUREMENTS):
                v = e.measurements.get(k)
                if v is not None and math.isfinite(v) and abs(v) < ECG_SENTINEL_MIN:
                    meas[n, i] = np.clip((v - mean[i]) / std[i], -Z_CLIP, Z_CLIP)
                else:
                    meas[n, len(ECG_MEASUREMENTS) + i] = 1.0
            toks = sorted({self._stmt_index.get(s.strip().lower(), 1) for s in e.statements}) or [0]
            stmt.append(np.asarray(toks, dtype=np.int32) + 1)  # +1: 0 is EmbeddingBag padding
        avail = np.asarray([hours(e.available_time, admit) for e in ecgs], dtype=np.float64)
        time = np.asarray([hours(e.time, admit) for e in ecgs], dtype=np.float64)
        return avail, time, sigs, meas, stmt


SPARSE_GROUPS_BY_CATEGORY = {v: k for k, v in SPARSE_GROUPS.items()}


def admission(events: Sequence[_Event]) -> datetime:
    opened = next((e for e in events if isinstance(e, StayOpened)), None)
    if opened is not None:
        return opened.time
    times = [e.time for e in events if isinstance(e, (Measurement, Ecg))]
    if not times:
        return datetime(1970, 1, 1)
    return min(times)
