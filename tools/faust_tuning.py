"""Faust tuned from its own source (issue 25 item 4): a bare faust-streaming agent that only counts reads one
synthetic backlog in turn with faust's defaults, without its Cython extensions (NO_CYTHON=1), with
stream_buffer_maxsize 131,072, and without the Monitor sensor; round after round, so drift hits all alike.

    python tools/faust_tuning.py [--stays 100] [--rounds 3]

It starts its own tansu broker and Redis (`medm2t bench stream`'s local_stack) and prints events/s per
run and the median per variant. The figures are in docs/benchmarks.md ("Faust tuning").
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from medm2t.cli import bench_stream

# name -> (faust.App options, environment); each keeps faust's Monitor sensor except the last
MONITOR = {"MEDM2T_FAUST_MONITOR": "1"}
VARIANTS = {
    "faust defaults": ({}, MONITOR),
    "NO_CYTHON=1": ({}, {**MONITOR, "NO_CYTHON": "1"}),
    "stream_buffer_maxsize=131072": ({"stream_buffer_maxsize": 131072}, MONITOR),
    "without the Monitor": ({}, {}),
}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stays", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="faust-tuning-"))
    with bench_stream.local_stack(tmp, 600) as bench:
        cohort = bench.cohort(args.stays, 0)
        bench.reset()
        n, n_msgs = bench.replay(cohort, "max")
        print(f"{n:,} events in {n_msgs:,} messages")
        rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for round_ in range(args.rounds):
            for i, (name, (options, env)) in enumerate(VARIANTS.items()):
                # a fresh consumer group per run, so that each reads the whole backlog
                seconds, _ = bench.bare_faust(n_msgs, f"tuning-{round_}-{i}", options, env)
                rates[name].append(n / seconds)
                print(f"round {round_ + 1} {name:<30} {rates[name][-1]:>9,.0f} events/s", flush=True)
        for name, values in rates.items():
            print(f"{name:<30} median {statistics.median(values):>9,.0f} events/s "
                  f"(runs {', '.join(f'{v:,.0f}' for v in values)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
