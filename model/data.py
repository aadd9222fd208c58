"""Datasets for training and evaluation, built from a source SPEC (see replay.sources.parse_spec).

Reading a source (e.g. untarring 4,000 PhysioNet records) and encoding landmark prefixes are the slow
parts, so both are cached on disk under the cache folder (default `.medm2t/cache`, or
MEDM2T_CACHE_DIR):
- `stays-<key>.npz`: the stays of a spec in a compact columnar form (`CompactStay`); the key hashes the
  spec and the size and mtime of every file it names, so a changed file is re-read.

Stays are held compactly and turned back into canonical events one stay at a time: 4,000 PhysioNet
stays are 1.8 M Measurement objects, about 6 GB of pydantic objects if kept, ~150 MB as arrays.
- `samples-<key>.npz`: encoded landmark samples; the key hashes the stays key, the fitted featurizer's
  artifacts and the landmark settings, so a refitted featurizer never reuses stale inputs.

Both are numpy archives of plain arrays plus JSON (model/cachefile.py), read with allow_pickle=False: a
cache file never runs code, whoever put it there. A file that does not read back is rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import ConfigDict, TypeAdapter

from medm2t.events import Ecg, Event, Measurement, Outcome, StayOpened, _Event
from model import cachefile
from model.labels import Targets, targets_at
from model.landmarks import evaluation_landmarks, training_landmarks

log = logging.getLogger(__name__)


class DataSpecError(ValueError):
    """A data spec that names nothing readable, or data with no stays (the CLI shows it as one line)."""
CACHE_FORMAT = 3
_T0 = datetime(1900, 1, 1)
_US = timedelta(microseconds=1)
_T0_NP = np.datetime64(_T0, "us") - np.datetime64(0, "us")


def cache_dir() -> Path:
    return Path(os.environ.get("MEDM2T_CACHE_DIR", ".medm2t/cache"))


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


class LazyStays:
    """A read-only sequence of event lists, materialised one stay at a time."""

    def __init__(self, compact: Sequence[CompactStay], indices: Sequence[int] | None = None):
        self.compact = compact
        self.indices = list(range(len(compact))) if indices is None else list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> list[_Event]:
        return self.compact[self.indices[i]].events()

    def __iter__(self):
        for i in self.indices:
            yield self.compact[i].events()

    def subset(self, indices: Sequence[int]) -> LazyStays:
        return LazyStays(self.compact, [self.indices[i] for i in indices])


@dataclass
class Cohort:
    """The stays of one spec, with the reader's warnings (each names file/row)."""

    spec: str
    compact: list[CompactStay]
    warnings: list[str]
    key: str
    dense_vitals: bool = True  # the source charts vitals often enough for the dense grid (Reader.dense_vitals)

    @property
    def stays(self) -> LazyStays:
        return LazyStays(self.compact)

    @classmethod
    def from_events(cls, spec: str, stays: Sequence[list[_Event]], key: str, warnings: Sequence[str] = ()) -> Cohort:
        return cls(spec, [CompactStay(s) for s in stays if s], list(warnings), key)

    def subject_ids(self) -> list[int]:
        return [c.subject_id for c in self.compact]


@dataclass
class Sample:
    """One (stay, prediction time) pair: the encoded inputs and the targets at that time."""

    stay_id: int
    subject_id: int
    landmark: str          # 'random' / 'end' in training; '6h', ..., 'end' in evaluation
    at: datetime
    inputs: object         # model.inputs.StayInputs
    targets: Targets


def stay_subject(events: Sequence[_Event]) -> int:  # noqa: D103
    return events[0].subject_id if events else -1


def _spec_key(spec: str) -> str:
    """Hash of the spec and the (size, mtime) of every existing path it names."""
    parts = [spec, f"format={CACHE_FORMAT}"]
    for token in re.split(r"[:,=]", spec):
        p = Path(token).expanduser()
        if token and p.exists():
            files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
            for f in files[:5000]:
                st = f.stat()
                parts.append(f"{f}:{st.st_size}:{int(st.st_mtime)}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()[:16]


def _reader(spec: str):
    from replay.sources import parse_spec

    return parse_spec(spec)


def _dense_vitals(spec: str) -> bool:
    from replay.sources import source_class

    return source_class(spec).dense_vitals


def load_cohort(spec: str, use_cache: bool = True, progress: bool = True) -> Cohort:
    """Read every stay of `spec` once (cached). Raises DataSpecError for a bad spec."""
    key = _spec_key(spec)
    path = cache_dir() / f"stays-{key}.npz"
    if use_cache and path.exists():
        try:
            compact, warnings = read_stays(path)
            log.info("read %d stays of %s from cache %s", len(compact), spec, path)
            return Cohort(spec, compact, warnings, key, _dense_vitals(spec))
        except Exception as exc:  # a truncated or foreign cache file is re-read, never trusted
            log.warning("ignoring unreadable cache %s (%s)", path, exc)
    try:
        reader, dense_vitals = _reader(spec), _dense_vitals(spec)
    except (ValueError, FileNotFoundError) as exc:
        raise DataSpecError(f"bad data spec {spec!r}: {exc}") from exc
    from tqdm import tqdm

    compact = [CompactStay(s) for s in tqdm(reader.stays(), desc=f"reading {spec[:60]}", unit="stay",
                                             disable=not progress) if s]
    warnings = list(getattr(reader, "warnings", []))
    if not compact:
        raise DataSpecError(f"data spec {spec!r} yielded no stays")
    for w in warnings[:20]:
        log.warning("%s", w)
    if len(warnings) > 20:
        log.warning("... and %d more reader warnings", len(warnings) - 20)
    if use_cache:
        write_stays(path, compact, warnings)
    return Cohort(spec, compact, warnings, key, dense_vitals)


def featurizer_key(featurizer) -> str:
    return hashlib.sha1(json.dumps(featurizer.to_dict(), sort_keys=True, default=str).encode()).hexdigest()[:16]


def _encode_all(stays, featurizer, planner, desc, progress) -> list[Sample]:
    """Encode every stay at the (name, time) pairs `planner(events)` gives, one stay in memory at a time."""
    from tqdm import tqdm

    samples = []
    for events in tqdm(stays, total=len(stays), desc=desc, unit="stay", disable=not progress):
        times = planner(events)
        if not times:
            continue
        inputs = featurizer.encode_many(events, [at for _, at in times])
        for (name, at), x in zip(times, inputs):
            samples.append(Sample(events[0].stay_id, stay_subject(events), name, at, x, targets_at(events, at)))
    return samples


def _cached(key_parts: list[str], build, use_cache: bool):
    key = hashlib.sha1("|".join([f"format={CACHE_FORMAT}", *key_parts]).encode()).hexdigest()[:16]
    path = cache_dir() / f"samples-{key}.npz"
    if use_cache and path.exists():
        try:
            return read_samples(path)
        except Exception as exc:  # a truncated or foreign cache file is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s)", path, exc)
    samples = build()
    if use_cache:
        try:
            write_samples(path, samples)
        except cachefile.CacheFormatError as exc:
            log.warning("not caching samples in %s (%s)", path, exc)
    return samples


def training_samples(
    cohort: Cohort, indices: Sequence[int], featurizer, n_random: int, seed: int,
    use_cache: bool = True, progress: bool = True,
) -> list[Sample]:
    """Landmark samples for training: `n_random` random prefixes per stay plus its end of data."""

    def build():
        rng = np.random.default_rng(seed)

        def planner(events):
            times = training_landmarks(events, rng, n_random)
            return [("end" if k == len(times) - 1 else "random", t) for k, t in enumerate(times)]

        return _encode_all(cohort.stays.subset(indices), featurizer, planner, "encoding training prefixes", progress)

    idx_key = hashlib.sha1(np.asarray(indices, dtype=np.int64).tobytes()).hexdigest()[:12]
    return _cached(["train", cohort.key, idx_key, featurizer_key(featurizer), str(n_random), str(seed)], build, use_cache)


def evaluation_samples(
    cohort: Cohort, indices: Sequence[int] | None, featurizer, use_cache: bool = True, progress: bool = True,
    landmarks: bool = True,
) -> list[Sample]:
    """Samples at 6/12/24/48 h (where reached) and at the end of each stay's data (`landmarks=False`: end only)."""
    indices = range(len(cohort.stays)) if indices is None else indices

    def build():
        def planner(events):
            return [(k, t) for k, t in evaluation_landmarks(events).items() if landmarks or k == "end"]

        return _encode_all(cohort.stays.subset(indices), featurizer, planner, "encoding evaluation landmarks", progress)

    idx_key = hashlib.sha1(np.asarray(list(indices), dtype=np.int64).tobytes()).hexdigest()[:12]
    # "plan-2": stays without data are scored on static inputs since then; older caches lack them
    return _cached(["eval", "plan-2", cohort.key, idx_key, featurizer_key(featurizer), str(landmarks)], build, use_cache)


# ---------------------------------------------------------------- cache files (no pickle) ---------------

# Events other than measurements go through pydantic's own JSON (waveform bytes as base64, NaN kept), so
# reading them back validates them like any incoming event.
_EVENTS_JSON = TypeAdapter(list[Event], config=ConfigDict(ser_json_inf_nan="constants"))
_STAY_ARRAYS = ("eid", "time", "avail", "value", "codes")
_INPUT_ARRAYS = ("static", "vit_age", "vit_c", "vit_z", "vit_in_grid", "ecg_sig", "ecg_meas", "ecg_win")
_SPARSE_ARRAYS = ("val", "item", "win", "last", "frac")
_TARGETS = ("mortality", "los_remaining", "cvd_90d", "elapsed_days")


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
        cvd = targets["cvd_90d"][i]
        target = Targets(targets["mortality"][i], targets["los_remaining"][i], None if cvd is None else int(cvd),
                         targets["elapsed_days"][i])
        samples.append(Sample(stay_id[i], subject_id[i], landmarks[i], at[i], inputs, target))
    if k != len(stmts):
        raise cachefile.CacheFormatError("ECG statement counts do not match")
    return samples


def target_tensors(samples: Sequence[Sample]) -> dict:
    """Targets and masks as tensors: mortality (B,), los_remaining (B,), cvd_90d (B,) long; mask_* bool."""
    import torch

    def col(name, dtype):
        vals = [getattr(s.targets, name) for s in samples]
        mask = torch.tensor([v is not None for v in vals])
        data = torch.tensor([0 if v is None else v for v in vals], dtype=dtype)
        return data, mask

    out = {}
    for name, dtype in (("mortality", torch.float32), ("los_remaining", torch.float32), ("cvd_90d", torch.long)):
        out[name], out[f"mask_{name}"] = col(name, dtype)
    return out


def split_indices(cohort: Cohort, val_fraction: float, seed: int,
                  among: Sequence[int] | None = None) -> tuple[list[int], list[int]]:
    """Subject-grouped random split of the stays (or of the stays `among`) into (train, validation)."""
    subjects = np.array(cohort.subject_ids())
    idx = list(range(len(subjects))) if among is None else list(among)
    uniq = np.unique(subjects[idx])
    rng = np.random.default_rng(seed)
    val_subjects = set(rng.choice(uniq, size=max(1, int(round(len(uniq) * val_fraction))), replace=False).tolist())
    train = [i for i in idx if subjects[i] not in val_subjects]
    val = [i for i in idx if subjects[i] in val_subjects]
    return train, val


def fold_indices(cohort: Cohort, folds: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """GroupKFold by subject (shuffled by seed): [(train_idx, test_idx)] for fold 0..K-1."""
    subjects = np.array(cohort.subject_ids())
    uniq = np.unique(subjects)
    rng = np.random.default_rng(seed)
    rng.shuffle(uniq)
    fold_of = {s: k % folds for k, s in enumerate(uniq)}
    out = []
    for k in range(folds):
        test = [i for i, s in enumerate(subjects) if fold_of[s] == k]
        train = [i for i, s in enumerate(subjects) if fold_of[s] != k]
        out.append((train, test))
    return out


def describe(cohort: Cohort) -> dict:
    """Counts for the model card: stays, subjects, label coverage, modality coverage."""
    n_ecg = sum(bool(c.ecgs) for c in cohort.compact)
    outcomes = [c.outcome for c in cohort.compact]
    deaths = sum(bool(o and o.hospital_death) for o in outcomes)
    opened = sum(bool(c.head) for c in cohort.compact)
    return {
        "spec": cohort.spec, "stays": len(cohort.compact), "subjects": len(set(cohort.subject_ids())),
        "stays_with_static": opened, "stays_with_ecg": n_ecg, "in_hospital_deaths": deaths,
        "stays_with_mortality_label": sum(o is not None and o.hospital_death is not None for o in outcomes),
        "stays_with_cvd_label": sum(o is not None and o.cvd_90d is not None for o in outcomes),
        "reader_warnings": len(cohort.warnings),
    }
