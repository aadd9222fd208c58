"""Fitting the featurizer (model/features.py) on training stays: what it learns from them and saves in the
checkpoint. Applying it to any stay is features.py's."""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from medm2t.events import ECG_MEASUREMENTS, Ecg, Measurement, StayOpened, _Event
from model.config import ModelConfig
from model.features import (CATEGORY_MAX, ECG_SENTINEL_MIN, SPARSE_GROUPS, SPARSE_GROUPS_BY_CATEGORY, STATIC_CATEGORICAL,
                            STATIC_NUMERIC, Featurizer, ItemTokens, admission)
from model.inputs import hours


def fit_featurizer(stays: Sequence[list[_Event]], cfg: ModelConfig, progress: bool = True) -> Featurizer:
    """Fit the featurizer on TRAINING stays only: item vocabularies and value cut-points, window edges, and
    the standardisation of static inputs, dense vitals and ECG measurements (see model/features.py)."""
    from tqdm import tqdm

    tally = _Tally(set(cfg.vital_concepts))
    for events in tqdm(stays, desc="fit featurizer", unit="stay", leave=False, disable=not progress or len(stays) < 500):
        tally.add(events)
    n_win = {"labs": cfg.labs_windows, "vitals_tok": cfg.vitals_tok_windows, "ecg": cfg.ecg_windows}
    edges = {g: _quantile_edges(tally.times.get(g, []), n_win[g], default_span=48.0) for g in SPARSE_GROUPS}
    edges["ecg"] = _quantile_edges(tally.ecg_offsets, cfg.ecg_windows, default_span=48.0, start=-24.0)
    static_spec = {
        "mean": {k: _mean(tally.static_num[k]) for k in STATIC_NUMERIC},
        "std": {k: _std(tally.static_num[k]) for k in STATIC_NUMERIC},
        "vocab": {k: [c for c, _ in tally.static_cat[k].most_common(CATEGORY_MAX)] for k in STATIC_CATEGORICAL},
    }
    vitals_spec = {"mean": [_mean(tally.vit[c]) for c in cfg.vital_concepts],
                   "std": [_std(tally.vit[c]) for c in cfg.vital_concepts]}
    ecg_spec = {
        "mean": [_mean(tally.ecg_meas[k]) for k in ECG_MEASUREMENTS],
        "std": [_std(tally.ecg_meas[k]) for k in ECG_MEASUREMENTS],
        "statements": [s for s, _ in tally.stmts.most_common(cfg.stmt_vocab_max)],
    }
    return Featurizer(cfg, tally.item_tokens(cfg.value_bins), edges, static_spec, vitals_spec, ecg_spec)


@dataclass
class _Tally:
    """What the training stays hold, item by item and field by field."""

    concepts: set[str]  # the dense vitals' concepts
    numeric: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    texts: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    category: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    times: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    static_num: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    static_cat: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    vit: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    ecg_meas: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    ecg_offsets: list[float] = field(default_factory=list)
    stmts: Counter = field(default_factory=Counter)

    def add(self, events: Sequence[_Event]) -> None:
        admit = admission(events)
        for e in events:
            if isinstance(e, Measurement):
                if e.value is not None and math.isfinite(e.value):
                    self.numeric[e.item].append(e.value)
                    if e.concept in self.concepts:
                        self.vit[e.concept].append(e.value)
                elif e.text is not None:
                    self.texts[e.item][e.text.strip().lower()] += 1
                else:
                    continue
                self.category[e.item][e.category] += 1
                self.times[SPARSE_GROUPS_BY_CATEGORY[e.category]].append(hours(e.time, admit))
            elif isinstance(e, StayOpened):
                for k in STATIC_NUMERIC:
                    v = getattr(e.static, k)
                    if v is not None and math.isfinite(v) and v > 0:
                        self.static_num[k].append(v)
                for k in STATIC_CATEGORICAL:
                    if getattr(e.static, k):
                        self.static_cat[k][getattr(e.static, k)] += 1
            elif isinstance(e, Ecg):
                self.ecg_offsets.append(hours(e.time, admit))
                for k in ECG_MEASUREMENTS:
                    v = e.measurements.get(k)
                    if v is not None and math.isfinite(v) and abs(v) < ECG_SENTINEL_MIN:
                        self.ecg_meas[k].append(v)
                self.stmts.update({s.strip().lower() for s in e.statements})

    def item_tokens(self, value_bins: int) -> dict[str, ItemTokens]:
        """Each item's tokens: numeric items get quantile cut-points, text items their commonest categories."""
        qs = np.linspace(0.05, 0.95, value_bins - 1)
        items: dict[str, ItemTokens] = {}
        counters = {g: [1, 1] for g in SPARSE_GROUPS}  # next item token, next value token
        for code in sorted(self.category):
            group = SPARSE_GROUPS_BY_CATEGORY[self.category[code].most_common(1)[0][0]]
            n_num, n_txt = len(self.numeric.get(code, ())), sum(self.texts.get(code, Counter()).values())
            if n_num >= n_txt:
                cuts = np.unique(np.quantile(np.asarray(self.numeric[code]), qs)).tolist()
                it = ItemTokens(group, counters[group][0], counters[group][1], cuts, None)
            else:
                cats = [c for c, _ in self.texts[code].most_common(CATEGORY_MAX)]
                it = ItemTokens(group, counters[group][0], counters[group][1], None, cats)
            items[code] = it
            counters[group][0] += 1
            counters[group][1] += it.n_tokens
        return items


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else 0.0


def _std(values: list[float]) -> float:
    return float(np.std(values) or 1.0) if values else 1.0


def _quantile_edges(values: list[float], n_windows: int, default_span: float, start: float = 0.0) -> list[float]:
    """n_windows-1 strictly increasing interior edges at the quantiles of `values` (training event times)."""
    if n_windows < 2:
        return []
    if len(values) >= n_windows:
        e = np.quantile(np.asarray(values), np.arange(1, n_windows) / n_windows)
    else:
        e = np.linspace(start, start + default_span, n_windows + 1)[1:-1]
    e = np.round(e, 3)
    for i in range(1, len(e)):
        e[i] = max(e[i], e[i - 1] + 0.01)
    return e.tolist()
