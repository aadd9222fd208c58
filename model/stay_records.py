"""What the dataset caches hold (model/data.py): stays as compact columnar arrays (`CompactStay`) and encoded
landmark samples (`Sample`), and how both are written to and read from numpy archives of plain arrays
plus JSON (model/cachefile.py), read with allow_pickle=False: a cache file never runs code."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import ConfigDict, TypeAdapter

from medm2t.events import Ecg, Event, Measurement, Outcome, StayOpened, _Event
from medm2t.vocabulary import CVD_90D, LOS_REMAINING, MORTALITY, TASKS
from model import cachefile
from model.labels import Targets

CACHE_FORMAT = 3
_T0 = datetime(1900, 1, 1)
_US = timedelta(microseconds=1)
_T0_NP = np.datetime64(_T0, "us") - np.datetime64(0, "us")


_MEAS_STR = ("item", "label", "category", "concept", "text", "unit", "source_item")


class CompactStay:
    """One stay with its measurements as arrays (strings as indexes into a small per-stay table); other
    events (StayOpened, ECGs, StayClosed, Outcome) are kept as they are."""

    __slots__ = ("stay_id", "subject_id", "source", "head", "ecgs", "tail", "eid", "time", "avail", "value",
                 "strings", "codes")

    def __init__(self, events: Sequence[_Event]):
        meas = [e for e in events if isinstance(e, Measurement)]
        first = events[0]
        self.stay_id, self.subject_id, self.source = first.stay_id, first.subject_id, first.source
        self.head = [e for e in events if isinstance(e, StayOpened)]
        self.ecgs = [e for e in events if isinstance(e, Ecg)]
        self.tail = [e for e in events if not isinstance(e, (StayOpened, Measurement, Ecg))]
        self.eid = np.array([m.event_id for m in meas], dtype="S")
        self.time = np.array([(m.time - _T0) // _US for m in meas], dtype=np.int64)
        self.avail = np.array([(m.available_time - _T0) // _US for m in meas], dtype=np.int64)
        self.value = np.array([np.nan if m.value is None else m.value for m in meas], dtype=np.float64)
        table: dict = {None: 0}
        self.codes = np.array([[table.setdefault(getattr(m, f), len(table)) for f in _MEAS_STR] for m in meas],
                              dtype=np.int32).reshape(len(meas), len(_MEAS_STR))
        self.strings = list(table)

    @property
    def outcome(self) -> Outcome | None:
        return next((e for e in self.tail if isinstance(e, Outcome)), None)

    def events(self) -> list[_Event]:
        """The canonical event list, in the reader contract's order."""
        common = {"stay_id": self.stay_id, "subject_id": self.subject_id, "source": self.source, "kind": "measurement"}
        times = (self.time.astype("datetime64[us]") + _T0_NP).tolist()
        avails = (self.avail.astype("datetime64[us]") + _T0_NP).tolist()
        values = [None if v != v else v for v in self.value.tolist()]
        eids = [b.decode() for b in self.eid.tolist()]
        st = self.strings
        body: list[_Event] = list(self.ecgs)
        for k, codes in enumerate(self.codes.tolist()):
            fields = dict(zip(_MEAS_STR, (st[c] for c in codes)))
            fields.update(common, event_id=eids[k], time=times[k], available_time=avails[k], value=values[k])
            body.append(_trusted_measurement(fields))
        if self.ecgs:
            body.sort(key=lambda e: (e.available_time, e.time, e.event_id))
        return [*self.head, *body, *self.tail]


_FIELDS_SET = frozenset(Measurement.model_fields)


def _trusted_measurement(fields: dict) -> Measurement:
    """A Measurement from fields that were validated when the stay was first read. This is what
    pydantic's model_construct does, minus its per-call default handling: 6x faster, and rebuilding
    events is the cost of every training and evaluation pass."""
    obj = object.__new__(Measurement)
    object.__setattr__(obj, "__dict__", fields)
    object.__setattr__(obj, "__pydantic_fields_set__", set(_FIELDS_SET))
    object.__setattr__(obj, "__pydantic_extra__", None)
    object.__setattr__(obj, "__pydantic_private__", None)
    return obj


@dataclass
class Sample:
    """One (stay, prediction time) pair: the encoded inputs and the targets at that time."""

    stay_id: int
    subject_id: int
    landmark: str          # 'random' / 'end' in training; '6h', ..., 'end' in evaluation
    at: datetime
    inputs: object         # model.inputs.StayInputs
    targets: Targets


# Events other than measurements go through pydantic's own JSON (waveform bytes as base64, NaN kept), so
# reading them back validates them like any incoming event.
_EVENTS_JSON = TypeAdapter(list[Event], config=ConfigDict(ser_json_inf_nan="constants"))
_STAY_ARRAYS = ("eid", "time", "avail", "value", "codes")
_INPUT_ARRAYS = ("static", "vit_age", "vit_c", "vit_z", "vit_in_grid", "ecg_sig", "ecg_meas", "ecg_win")
_SPARSE_ARRAYS = ("val", "item", "win", "last", "frac")
_TARGETS = (*TASKS, "elapsed_days")


def _check_meta(meta, kind: str) -> None:
    if not isinstance(meta, dict) or meta.get("kind") != kind or meta.get("format") != CACHE_FORMAT:
        raise cachefile.CacheFormatError(f"not a format-{CACHE_FORMAT} {kind} cache")


def write_stays(path: Path, compact: Sequence[CompactStay], warnings: Sequence[str]) -> None:
    width = max([c.eid.dtype.itemsize for c in compact] + [1])
    arrays = cachefile.pack([{"eid": c.eid.astype(f"S{width}"), **{f: getattr(c, f) for f in _STAY_ARRAYS[1:]}}
                             for c in compact])
    events = [e for c in compact for e in (*c.head, *c.ecgs, *c.tail)]
    arrays["events_json"] = np.frombuffer(_EVENTS_JSON.dump_json(events), dtype=np.uint8)
    meta = {"kind": "stays", "format": CACHE_FORMAT, "warnings": list(warnings),
            "stays": [{"stay_id": c.stay_id, "subject_id": c.subject_id, "source": c.source, "strings": c.strings,
                       "n_head": len(c.head), "n_ecgs": len(c.ecgs), "n_tail": len(c.tail)} for c in compact]}
    cachefile.write(path, arrays, meta)


def read_stays(path: Path) -> tuple[list[CompactStay], list[str]]:
    arrays, meta = cachefile.read(path)
    _check_meta(meta, "stays")
    infos = meta["stays"]
    records = cachefile.unpack(arrays, _STAY_ARRAYS, len(infos))
    events = _EVENTS_JSON.validate_json(arrays["events_json"].tobytes())
    compact, k = [], 0
    for info, rec in zip(infos, records):
        c = CompactStay.__new__(CompactStay)
        c.stay_id, c.subject_id, c.source = int(info["stay_id"]), int(info["subject_id"]), str(info["source"])
        n_head, n_ecgs, n_tail = int(info["n_head"]), int(info["n_ecgs"]), int(info["n_tail"])
        c.head, c.ecgs = events[k:k + n_head], events[k + n_head:k + n_head + n_ecgs]
        c.tail = events[k + n_head + n_ecgs:k + n_head + n_ecgs + n_tail]
        k += n_head + n_ecgs + n_tail
        if not (all(isinstance(e, StayOpened) for e in c.head) and all(isinstance(e, Ecg) for e in c.ecgs)
                and not any(isinstance(e, (StayOpened, Measurement, Ecg)) for e in c.tail)):
            raise cachefile.CacheFormatError(f"stay {c.stay_id}: events out of place")
        c.strings = [None if v is None else str(v) for v in info["strings"]]
        for f in _STAY_ARRAYS:
            setattr(c, f, rec[f])
        if len(c.codes) and int(c.codes.max()) >= len(c.strings):
            raise cachefile.CacheFormatError(f"stay {c.stay_id}: string code out of range")
        compact.append(c)
    if k != len(events):
        raise cachefile.CacheFormatError("event counts do not match the events")
    return compact, [str(w) for w in meta["warnings"]]


def write_samples(path: Path, samples: Sequence[Sample]) -> None:
    groups = list(samples[0].inputs.sparse) if samples else []
    records = []
    for s in samples:
        x = s.inputs
        if list(x.sparse) != groups:
            raise cachefile.CacheFormatError(f"sparse groups {list(x.sparse)} differ from {groups}")
        rec = {f: getattr(x, f) for f in _INPUT_ARRAYS}
        rec.update({f"sparse.{g}.{f}": getattr(x.sparse[g], f) for g in groups for f in _SPARSE_ARRAYS})
        records.append(rec)
    arrays = cachefile.pack(records)
    stmts = [t for s in samples for t in s.inputs.ecg_stmt]
    arrays.update(cachefile.pack([{"ecg_stmt": t} for t in stmts]) if stmts else
                  {"ecg_stmt": np.zeros(0, dtype=np.int32), "ecg_stmt@len": np.zeros(0, dtype=np.int64)})
    arrays["stay_id"] = np.asarray([s.stay_id for s in samples], dtype=np.int64)
    arrays["subject_id"] = np.asarray([s.subject_id for s in samples], dtype=np.int64)
    arrays["at_us"] = np.asarray([(s.at - _T0) // _US for s in samples], dtype=np.int64)
    arrays["elapsed_h"] = np.asarray([s.inputs.elapsed_h for s in samples], dtype=np.float64)
    arrays["has_static"] = np.asarray([s.inputs.has_static for s in samples], dtype=bool)
    arrays["n_unknown"] = np.asarray([s.inputs.n_unknown for s in samples], dtype=np.int64)
    for name in _TARGETS:
        vals = [getattr(s.targets, name) for s in samples]
        arrays[f"target.{name}"] = np.asarray([0 if v is None else v for v in vals], dtype=np.float64)
        arrays[f"target.{name}.known"] = np.asarray([v is not None for v in vals], dtype=bool)
    meta = {"kind": "samples", "format": CACHE_FORMAT, "n": len(samples), "groups": groups,
            "landmarks": [s.landmark for s in samples]}
    cachefile.write(path, arrays, meta)


def read_samples(path: Path) -> list[Sample]:
    from model.inputs import SparseInputs, StayInputs

    arrays, meta = cachefile.read(path)
    _check_meta(meta, "samples")
    n, groups = int(meta["n"]), [str(g) for g in meta["groups"]]
    if n == 0:
        return []
    names = [*_INPUT_ARRAYS, *(f"sparse.{g}.{f}" for g in groups for f in _SPARSE_ARRAYS)]
    records = cachefile.unpack(arrays, names, n)
    stmts = [r["ecg_stmt"] for r in cachefile.unpack(arrays, ["ecg_stmt"], len(arrays["ecg_stmt@len"]))]
    at = (arrays["at_us"].astype("datetime64[us]") + _T0_NP).tolist()
    stay_id, subject_id = arrays["stay_id"].tolist(), arrays["subject_id"].tolist()
    elapsed_h, has_static, n_unknown = (arrays[k].tolist() for k in ("elapsed_h", "has_static", "n_unknown"))
    targets = {name: [v if known else None for v, known in zip(arrays[f"target.{name}"].tolist(),
                                                                  arrays[f"target.{name}.known"].tolist())]
               for name in _TARGETS}
    landmarks = [str(x) for x in meta["landmarks"]]
    if not (len(at) == len(landmarks) == n):
        raise cachefile.CacheFormatError("sample counts do not match")
    samples, k = [], 0
    for i, rec in enumerate(records):
        n_ecg = len(rec["ecg_win"])
        inputs = StayInputs(
            elapsed_h=elapsed_h[i], static=rec["static"], has_static=has_static[i],
            sparse={g: SparseInputs(**{f: rec[f"sparse.{g}.{f}"] for f in _SPARSE_ARRAYS}) for g in groups},
            vit_age=rec["vit_age"], vit_c=rec["vit_c"], vit_z=rec["vit_z"], vit_in_grid=rec["vit_in_grid"],
            ecg_sig=rec["ecg_sig"], ecg_meas=rec["ecg_meas"], ecg_stmt=stmts[k:k + n_ecg], ecg_win=rec["ecg_win"],
            n_unknown=n_unknown[i])
        k += n_ecg
        cvd = targets[CVD_90D][i]
        target = Targets(targets[MORTALITY][i], targets[LOS_REMAINING][i], None if cvd is None else int(cvd),
                         targets["elapsed_days"][i])
        samples.append(Sample(stay_id[i], subject_id[i], landmarks[i], at[i], inputs, target))
    if k != len(stmts):
        raise cachefile.CacheFormatError("ECG statement counts do not match")
    return samples
