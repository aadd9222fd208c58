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

Both are numpy archives of plain arrays plus JSON (model/cachefile.py, model/stay_records.py), read with
allow_pickle=False: a cache file never runs code, whoever put it there. A file that does not read back is
rebuilt.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from medm2t.events import _Event
from medm2t.vocabulary import CVD_90D, LOS_REMAINING, MORTALITY
from model import cachefile
from model.labels import targets_at
from model.landmarks import evaluation_landmarks, training_landmarks
from model.stay_records import (CACHE_FORMAT, CompactStay, Sample, read_samples, read_stays, write_samples,
                                write_stays)

log = logging.getLogger(__name__)


class DataSpecError(ValueError):
    """A data spec that names nothing readable, or data with no stays (the CLI shows it as one line)."""


def cache_dir() -> Path:
    return Path(os.environ.get("MEDM2T_CACHE_DIR", ".medm2t/cache"))


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


def target_tensors(samples: Sequence[Sample]) -> dict:
    """Targets and masks as tensors: mortality (B,), los_remaining (B,), cvd_90d (B,) long; mask_* bool."""
    import torch

    def col(name, dtype):
        vals = [getattr(s.targets, name) for s in samples]
        mask = torch.tensor([v is not None for v in vals])
        data = torch.tensor([0 if v is None else v for v in vals], dtype=dtype)
        return data, mask

    out = {}
    for name, dtype in ((MORTALITY, torch.float32), (LOS_REMAINING, torch.float32), (CVD_90D, torch.long)):
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
