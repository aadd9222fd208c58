"""`medm2t bench read`: speed and memory of the filtered chartevents scan the MIMIC reader uses, on a
large synthetic chartevents.csv.gz in MIMIC layout (generated once, then cached)."""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

COLUMNS = "subject_id,hadm_id,stay_id,caregiver_id,charttime,storetime,itemid,value,valuenum,valueuom,warning"


def register_bench(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser(
        "read", help="rows/s and peak memory of the filtered MIMIC chartevents scan",
        description="Generate (once, cached) a synthetic chartevents.csv.gz with many itemids and stays, then time "
                    "the bounded-memory scan that keeps only catalogue items of cohort stays. "
                    "Targets: >= 1M rows/s, peak RSS < 2 GB.",
    )
    p.add_argument("--rows", type=int, default=20_000_000, help="rows in the synthetic table (default 20,000,000)")
    p.add_argument("--stays", type=int, default=50_000, help="distinct ICU stays in it (default 50,000)")
    p.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "medm2t-bench",
                   help="where the generated file is cached (default: %(default)s)")
    p.set_defaults(handler=_bench)


def generate(path: Path, rows: int, stays: int, seed: int = 0, chunk: int = 1_000_000) -> None:
    """Write `rows` chartevents rows in chunks (bounded memory): 40% catalogue vitals/labs, the rest other items."""
    import gzip

    import numpy as np
    import polars as pl
    from tqdm import tqdm

    from medm2t.items import CHART_TABLE_IDS

    rng = np.random.default_rng(seed)
    model_ids = np.array(sorted(CHART_TABLE_IDS), dtype=np.int64)
    other_ids = np.arange(224000, 224000 + 400, dtype=np.int64)
    base = np.datetime64("2150-01-01T00:00:00")
    tmp = path.with_suffix(".partial")
    with gzip.open(tmp, "wb", compresslevel=1) as fh:
        fh.write((COLUMNS + "\n").encode())
        for start in tqdm(range(0, rows, chunk), desc="generating", unit=" chunks", file=sys.stderr):
            n = min(chunk, rows - start)
            stay = rng.integers(0, stays, n)
            itemid = np.where(rng.random(n) < 0.4, rng.choice(model_ids, n), rng.choice(other_ids, n))
            t = base + (stay * 86400 * 3 + rng.integers(0, 86400 * 3, n)).astype("timedelta64[s]")
            value = np.round(rng.normal(80, 20, n), 1)
            frame = pl.DataFrame({
                "subject_id": 10_000_000 + stay // 2, "hadm_id": 20_000_000 + stay, "stay_id": 30_000_000 + stay,
                "caregiver_id": rng.integers(1, 9999, n), "charttime": t.astype("datetime64[s]").astype(str),
                "storetime": (t + np.timedelta64(300, "s")).astype("datetime64[s]").astype(str),
                "itemid": itemid, "value": value.astype(str), "valuenum": value, "valueuom": "bpm", "warning": 0,
            })
            fh.write(frame.write_csv(include_header=False).encode())
    tmp.rename(path)


def _scan(path: str, stays: int, out) -> None:
    import resource

    from medm2t.items import CHART_TABLE_IDS
    from replay.csv_scan import ScanStats, scan_filtered

    stats = ScanStats()
    keep = {"itemid": {str(i) for i in CHART_TABLE_IDS}, "stay_id": {str(30_000_000 + s) for s in range(stays)}}
    columns = ["subject_id", "stay_id", "charttime", "storetime", "itemid", "value", "valuenum"]
    t0 = time.perf_counter()
    for _ in scan_filtered(Path(path), columns, keep, stats):
        pass
    elapsed = time.perf_counter() - t0
    out.put((stats.rows, stats.kept, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def _bench(args: argparse.Namespace) -> int:
    import multiprocessing as mp

    args.cache_dir.mkdir(parents=True, exist_ok=True)
    path = args.cache_dir / f"chartevents-{args.rows}-{args.stays}.csv.gz"
    if not path.exists():
        generate(path, args.rows, args.stays)
    print(f"file       {path} ({path.stat().st_size / 1e6:,.0f} MB)")
    # A fresh process, so the peak RSS measured is the scan's own and not the generator's.
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_scan, args=(str(path), args.stays, queue))
    proc.start()
    rows, kept, elapsed, peak = queue.get()
    proc.join()
    print(f"rows       {rows:,} scanned, {kept:,} kept")
    print(f"time       {elapsed:.1f} s")
    print(f"speed      {rows / elapsed / 1e6:.2f} M rows/s (target >= 1)")
    print(f"peak RSS   {peak / 2**30:.2f} GiB (target < 2)")
    return 0
