"""Byte-reproducible writers: gzip CSV tables in MIMIC-IV's layout (no timestamp in the gzip header) and
WFDB records (format 16) in MIMIC-IV-ECG's layout."""
from __future__ import annotations

import gzip
import io
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from replay.synth.ecg_sim import ADC_GAIN, FS

TIME_FORMAT = "%Y-%m-%d %H:%M:%S"


class CsvTable:
    """Appends polars DataFrames to one CSV (or .csv.gz) file; the header is written once, from `columns`."""

    def __init__(self, path: Path, columns: tuple[str, ...], compresslevel: int = 4):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.columns = columns
        self._raw = open(path, "wb")
        # filename="" and mtime=0 keep the gzip header free of names and times, so equal data give equal bytes.
        self._fh = (gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, mtime=0, compresslevel=compresslevel)
                    if path.name.endswith(".gz") else self._raw)
        self._fh.write((",".join(columns) + "\n").encode())
        self.rows = 0

    def write(self, frame) -> None:
        if frame.height == 0:
            return
        buf = io.BytesIO()
        frame.select(list(self.columns)).write_csv(buf, include_header=False, datetime_format=TIME_FORMAT,
                                                   date_format="%Y-%m-%d")
        self._fh.write(buf.getvalue())
        self.rows += frame.height

    def close(self) -> None:
        if self._fh is not self._raw:
            self._fh.close()
        self._raw.close()


def ecg_relpath(subject_id: int, study_id: int) -> str:
    """MIMIC-IV-ECG layout: files/p1000/p10000032/s40689238/40689238 (no extension)."""
    return f"files/p{str(subject_id)[:4]}/p{subject_id}/s{study_id}/{study_id}"


def write_wfdb(base: Path, adc: np.ndarray, leads: tuple[str, ...], when: datetime) -> None:
    """Write `base`.hea and `base`.dat: 16-bit little-endian interleaved samples, gain ADC_GAIN per mV."""
    base.parent.mkdir(parents=True, exist_ok=True)
    name = base.name
    n_sig, n = adc.shape
    ints = adc.astype("<i2")
    (base.parent / f"{name}.dat").write_bytes(np.ascontiguousarray(ints.T).tobytes())
    sums = ints.astype(np.int64).sum(axis=1)
    lines = [f"{name} {n_sig} {FS} {n} {when:%H:%M:%S} {when:%d/%m/%Y}"]
    for k, lead in enumerate(leads):
        checksum = int((sums[k] + 32768) % 65536 - 32768)
        lines.append(f"{name}.dat 16 {ADC_GAIN:.1f}(0)/mV 16 0 {int(ints[k, 0])} {checksum} 0 {lead}")
    (base.parent / f"{name}.hea").write_text("\n".join(lines) + "\n")


def epoch_to_datetime(seconds: int) -> datetime:
    return datetime.fromtimestamp(int(seconds), tz=timezone.utc).replace(tzinfo=None)
