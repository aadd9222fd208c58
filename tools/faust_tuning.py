"""Faust tuned from its own source (issue 25 item 4): a bare faust-streaming agent that only counts reads one
synthetic backlog in turn with faust's defaults, without its Cython extensions (NO_CYTHON=1), with
stream_buffer_maxsize 131,072, and without the Monitor sensor; round after round, so drift hits all alike.

    python tools/faust_tuning.py [--stays 100] [--rounds 3]

It starts its own tansu broker and Redis (as `medm2t bench stream` does) and prints events/s per run and the
median per variant. The figures are in docs/benchmarks.md ("Faust tuning").
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from medm2t import topics
from medm2t.cli import bench_stream
from stream.services import free_port, kafka_service, redis_service

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
    kafka, redis = kafka_service(free_port(), tmp / "run"), redis_service(free_port(), tmp / "run", persist=False)
    kafka.start()
    redis.start()
    try:
        env = {**os.environ, "MEDM2T_KAFKA_URL": f"127.0.0.1:{kafka.port}", "MEDM2T_REDIS_PASSWORD": "",
               "MEDM2T_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0", "MEDM2T_RUN_DIR": str(tmp / "run")}
        bench = bench_stream._Bench(env, tmp, 600, {})
        cohort = bench.cohort(args.stays, 0)
        bench.reset()
        n, n_msgs = bench.replay(cohort, "max")
        print(f"{n:,} events in {n_msgs:,} messages")
        rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
        for round_ in range(args.rounds):
            for i, (name, (options, extra_env)) in enumerate(VARIANTS.items()):
                script, done = tmp / "agent.py", tmp / f"done-{round_}-{i}"
                script.write_text(bench_stream.BARE_FAUST)
                # a fresh consumer group per run, so that each reads the whole backlog
                proc = subprocess.Popen([sys.executable, str(script), str(n_msgs), str(done), topics.EVENTS,
                                         f"tuning-{round_}-{i}", json.dumps(options), "worker", "-l", "warn", "--without-web"],
                                        cwd=tmp, env={**env, **extra_env}, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.STDOUT, start_new_session=True)
                deadline = time.monotonic() + 300
                while not done.exists():
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"the agent for {name!r} failed; its script is {script}")
                    time.sleep(0.05)
                bench_stream._stop(proc)
                first, last = map(float, done.read_text().split())
                rates[name].append(n / (last - first))
                print(f"round {round_ + 1} {name:<30} {rates[name][-1]:>9,.0f} events/s", flush=True)
        for name, values in rates.items():
            print(f"{name:<30} median {statistics.median(values):>9,.0f} events/s "
                  f"(runs {', '.join(f'{v:,.0f}' for v in values)})")
    finally:
        redis.stop()
        kafka.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
