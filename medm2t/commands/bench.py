"""`medm2t bench ...`: benchmarks that print figures. Each benchmark module in medm2t/commands named
bench_*.py defines `register_bench(bench_subparsers)`."""
from __future__ import annotations

import argparse
import importlib
import pkgutil

from medm2t import commands


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="benchmarks that print measured figures (speed, memory)")
    bsub = p.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("bench_"):
            importlib.import_module(f"{commands.__name__}.{info.name}").register_bench(bsub)
