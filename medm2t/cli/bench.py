"""`medm2t bench ...`: benchmarks that print figures. Each benchmark module in medm2t/cli named
bench_*.py defines `register_bench(bench_subparsers)`."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path
from typing import Sequence


def nearest_rank(ordered: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values by nearest rank (a value that occurred); 0 if empty."""
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks that print measured figures (speed, memory)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda m: m.name):
        if info.name.startswith("bench_"):
            importlib.import_module(f"{__package__}.{info.name}").register_bench(bsub)
