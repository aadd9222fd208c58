"""The training caches hold plain arrays and JSON (no pickle): they round-trip exactly, and a planted pickle
is never executed, only rebuilt over."""
from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from model import cachefile  # noqa: E402
from model.data import _spec_key, cache_dir, evaluation_samples, load_cohort, training_samples  # noqa: E402
from model.stay_records import read_samples, read_stays  # noqa: E402


class Planted:
    """Unpickling this creates a marker file: proof that a loader ran code from the file."""

    marker: Path

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def plant(path: Path, marker: Path, as_npz: bool) -> None:
    payload = Planted()
    payload.marker = marker
    path.parent.mkdir(parents=True, exist_ok=True)
    if as_npz:  # an .npz whose arrays hold a pickled object
        with path.open("wb") as fh:
            np.savez(fh, eid=np.array([payload], dtype=object), __meta__=np.zeros(1, dtype=np.uint8))
    else:  # the old cache format: a plain pickle
        path.write_bytes(pickle.dumps(payload))


def same_samples(a, b) -> None:
    assert len(a) == len(b) and a
    for x, y in zip(a, b):
        assert (x.stay_id, x.subject_id, x.landmark, x.at, x.targets) == (y.stay_id, y.subject_id, y.landmark, y.at, y.targets)
        xi, yi = x.inputs, y.inputs
        assert (xi.elapsed_h, xi.has_static, xi.n_unknown) == (yi.elapsed_h, yi.has_static, yi.n_unknown)
        for name in ("static", "vit_age", "vit_c", "vit_z", "vit_in_grid", "ecg_sig", "ecg_meas", "ecg_win"):
            u, v = getattr(xi, name), getattr(yi, name)
            assert u.dtype == v.dtype and u.shape == v.shape and np.array_equal(u, v, equal_nan=True), name
        assert list(xi.sparse) == list(yi.sparse)
        for g in xi.sparse:
            for f in ("val", "item", "win", "last", "frac"):
                u, v = getattr(xi.sparse[g], f), getattr(yi.sparse[g], f)
                assert u.dtype == v.dtype and np.array_equal(u, v), (g, f)
        assert len(xi.ecg_stmt) == len(yi.ecg_stmt)
        for u, v in zip(xi.ecg_stmt, yi.ecg_stmt):
            assert u.dtype == v.dtype and np.array_equal(u, v)


def test_caches_round_trip_exactly_and_never_unpickle(synth_cohort, tmp_path, monkeypatch, caplog):
    from model.config import ModelConfig
    from model.feature_fit import fit_featurizer

    monkeypatch.setenv("MEDM2T_CACHE_DIR", str(tmp_path / "cache"))
    spec = f"synth:{synth_cohort}"
    marker = tmp_path / "code-ran"
    stays_path = cache_dir() / f"stays-{_spec_key(spec)}.npz"
    plant(stays_path, marker, as_npz=True)
    for as_npz in (True, False):
        plant(tmp_path / "planted.npz", marker, as_npz)
        with pytest.raises(cachefile.CacheFormatError):
            read_stays(tmp_path / "planted.npz")
        with pytest.raises(cachefile.CacheFormatError):
            read_samples(tmp_path / "planted.npz")

    fresh = load_cohort(spec, use_cache=False, progress=False)
    with caplog.at_level(logging.INFO, logger="model.data"):
        load_cohort(spec, use_cache=True, progress=False)  # ignores the planted file, writes a real cache
        cached = load_cohort(spec, use_cache=True, progress=False)
    assert not marker.exists()
    assert "ignoring unreadable cache" in caplog.text and "from cache" in caplog.text
    assert cached.warnings == fresh.warnings and len(cached.compact) == len(fresh.compact) == 30
    assert any(c.ecgs for c in cached.compact) and any(c.tail for c in cached.compact)
    for a, b in zip(fresh.stays, cached.stays):
        assert a == b

    featurizer = fit_featurizer(cached.stays, ModelConfig.from_preset("small"))
    idx = list(range(10))
    for make in (lambda use: training_samples(cached, idx, featurizer, 2, 0, use, False),
                 lambda use: evaluation_samples(cached, idx, featurizer, use, False)):
        built = make(False)
        make(True)  # writes the cache
        same_samples(built, make(True))  # reads it back
    assert len(list((tmp_path / "cache").glob("samples-*.npz"))) == 2
    assert not list((tmp_path / "cache").glob("*.tmp"))
    assert not marker.exists()
