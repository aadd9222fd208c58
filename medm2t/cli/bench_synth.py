"""`medm2t bench synth`: how fast the synthetic cohort generator writes stays."""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def register_bench(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser("synth", help="time `medm2t synth` (stays/s, total seconds, bytes written)",
                        description="Generate a synthetic cohort into a temporary folder (or --out) and print "
                                    "stays/s, total seconds and the size written. The folder is deleted afterwards "
                                    "unless --out is given.")
    p.add_argument("--stays", type=int, default=10_000, help="cohort size (default 10000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="keep the cohort here instead of a temporary folder")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError
    from replay.synth import generate

    if args.stays < 1:
        raise UserError("--stays must be at least 1")
    with tempfile.TemporaryDirectory(prefix="medm2t-bench-synth-") as tmp:
        out = args.out or Path(tmp)
        start = time.perf_counter()
        summary = generate(args.stays, args.seed, out)
        seconds = time.perf_counter() - start
        size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"synth: {summary.stays} stays in {seconds:.1f} s = {summary.stays / seconds:.1f} stays/s "
          f"({summary.ecgs} ECGs, {summary.rows['icu/chartevents']:,} chartevents, "
          f"{summary.rows['hosp/labevents']:,} labevents, {size / 1e6:.0f} MB written)")
    return 0
