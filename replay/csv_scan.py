"""Bounded-memory filtered scan of a big CSV / CSV.gz (MIMIC-IV's chartevents and labevents are tens of
GB). Blocks are decompressed and parsed by pyarrow's streaming reader with every column as text (one bad
value never aborts the scan) and filtered on id sets before anything is kept. Rows with the wrong column
count are skipped and their line numbers counted."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import numpy as np


class ScanStats:
    def __init__(self) -> None:
        self.rows = 0
        self.kept = 0
        self.bad_rows: list[int | None] = []


def find_table(folder: Path, name: str) -> Path | None:
    """`name.csv.gz` or `name.csv` inside folder, or None."""
    for suffix in (".csv.gz", ".csv"):
        path = folder / f"{name}{suffix}"
        if path.exists():
            return path
    return None


def scan_filtered(
    path: Path,
    columns: list[str],
    keep: dict[str, set[str]],
    stats: ScanStats | None = None,
    progress: bool = False,
    block_size: int = 16 << 20,
) -> Iterator["pl.DataFrame"]:  # noqa: F821
    """Yield polars frames (all columns Utf8, plus `_row` = 1-based data row number) of the rows whose
    column values are all in the `keep` sets. Raises ValueError naming the file if a column is missing."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.csv as pacsv
    from tqdm import tqdm

    stats = stats or ScanStats()

    def on_invalid(row) -> str:
        stats.bad_rows.append(row.number)
        return "skip"

    header = _header(path)
    missing = [c for c in columns if c not in header]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (header has {', '.join(header)})")
    reader = pacsv.open_csv(
        path,
        read_options=pacsv.ReadOptions(block_size=block_size, use_threads=True),
        parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid, newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            include_columns=columns,
            column_types={c: pa.string() for c in columns},
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    keep_arrays = {col: pa.array(sorted(values), pa.string()) for col, values in keep.items()}
    bar = tqdm(desc=path.name, unit=" rows", unit_scale=True, disable=not progress, file=sys.stderr, leave=False)
    try:
        for batch in reader:
            n = batch.num_rows
            mask = None
            for col, values in keep_arrays.items():
                m = pc.is_in(batch.column(col), value_set=values)
                mask = m if mask is None else pc.and_(mask, m)
            rows = np.arange(stats.rows + 1, stats.rows + n + 1, dtype=np.int64)
            stats.rows += n
            bar.update(n)
            if mask is not None:
                mask = pc.fill_null(mask, False)
                if not pc.any(mask).as_py():
                    continue
                batch = batch.filter(mask)
                rows = rows[mask.to_numpy(zero_copy_only=False)]
            stats.kept += batch.num_rows
            frame = pl.from_arrow(pa.Table.from_batches([batch]))
            yield frame.with_columns(pl.Series("_row", rows))
    finally:
        bar.close()


def _header(path: Path) -> list[str]:
    import gzip

    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", newline="") as fh:
        line = fh.readline()
    return [c.strip().strip('"') for c in line.rstrip("\r\n").split(",")]
