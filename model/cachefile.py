"""Cache files without pickle: one .npz of plain numeric arrays (read with allow_pickle=False) plus a JSON
document stored inside it. Loading a cache file therefore never runs code from the file, whoever wrote it.

`pack` turns a list of records (each a dict of name -> numpy array, the same names and trailing shapes in
every record) into a few concatenated arrays with per-record lengths; `unpack` gives the records back as
views into them. Object arrays are refused, so nothing here can need pickle.
"""
from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

_META = "__meta__"
_LEN = "@len"


class CacheFormatError(ValueError):
    """The data cannot be written to, or the file is not, a cache file of the expected layout."""


def pack(records: Sequence[dict[str, np.ndarray]], prefix: str = "") -> dict[str, np.ndarray]:
    """{prefix+name: records' arrays concatenated along axis 0, prefix+name+'@len': each record's length}."""
    if not records:
        return {}
    names = list(records[0])
    out: dict[str, np.ndarray] = {}
    for name in names:
        parts = []
        for rec in records:
            if rec.keys() != records[0].keys():
                raise CacheFormatError(f"records have different fields ({sorted(rec)} vs {sorted(records[0])})")
            parts.append(np.asarray(rec[name]))
        first = parts[0]
        if first.ndim == 0:
            raise CacheFormatError(f"{name}: a scalar, not an array")
        if first.dtype.hasobject:
            raise CacheFormatError(f"{name}: object arrays are not cacheable without pickle")
        for p in parts:
            if p.dtype != first.dtype or p.shape[1:] != first.shape[1:]:
                raise CacheFormatError(f"{name}: {p.dtype}{p.shape} does not stack with {first.dtype}{first.shape}")
        out[prefix + name] = np.concatenate(parts, axis=0)
        out[prefix + name + _LEN] = np.asarray([p.shape[0] for p in parts], dtype=np.int64)
    return out


def unpack(arrays: dict[str, np.ndarray], names: Sequence[str], n: int, prefix: str = "") -> list[dict[str, np.ndarray]]:
    """The `n` records `pack` wrote under `prefix`, as views."""
    records: list[dict[str, np.ndarray]] = [{} for _ in range(n)]
    for name in names:
        data, lengths = arrays[prefix + name], arrays[prefix + name + _LEN]
        if len(lengths) != n or int(lengths.sum()) != len(data):
            raise CacheFormatError(f"{name}: lengths do not match the data")
        ends = np.cumsum(lengths).tolist()
        start = 0
        for rec, end in zip(records, ends):
            rec[name] = data[start:end]
            start = end
    return records


def write(path: Path, arrays: dict[str, np.ndarray], meta: Any) -> None:
    """Write arrays and a JSON-able `meta` atomically (a temporary file renamed into place)."""
    for name, arr in arrays.items():
        if arr.dtype.hasobject:
            raise CacheFormatError(f"{name}: object arrays are not cacheable without pickle")
    payload = np.frombuffer(json.dumps(meta, separators=(",", ":"), allow_nan=True).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            np.savez(fh, **arrays, **{_META: payload})
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def read(path: Path) -> tuple[dict[str, np.ndarray], Any]:
    """(arrays, meta) of a file `write` made. Never unpickles: an object array in the file is an error."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:  # ValueError: pickled data, refused
        raise CacheFormatError(f"{path}: not a cache file ({exc})") from exc
    if _META not in arrays:
        raise CacheFormatError(f"{path}: no metadata")
    meta = json.loads(arrays.pop(_META).tobytes().decode())
    return arrays, meta
