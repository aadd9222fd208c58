"""`medm2t bench stream`: the live path end to end, over a real broker (tansu) and Redis that it starts
itself, side by side with a bare Faust agent on the same backlog.

1. A synthetic ward replay is published at --speed max: a backlog on the events topic.
2. A bare faust-streaming agent that only counts reads the backlog: the ceiling Faust allows here.
3. `medm2t worker` reads the same backlog: events/s from its first applied event until every point is
   scored (Redis's per-stay n_events and scored marks, as the fault tests check idleness).
4. Paced: fresh workers (--workers of them) are started, and the replay plays at --paced-rate events/s on
   average.
   Event→score latency is read off the broker: a score's Kafka timestamp minus that of the first input
   event of its stay at its clinical point (points that a late event moved are left out, and counted)."""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Iterator

from medm2t.cli.worker_processes import cores_each, process_env
from medm2t.vocabulary import MEDM2T, NEWS2


BARE_FAUST = '''
import json, sys, time
from medm2t.settings import get_settings
from stream.worker import faust_app
n, out, topic, app_id, overrides = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], json.loads(sys.argv[5])
sys.argv[1:6] = []  # the rest is Faust's own command line
app = faust_app(get_settings(), app_id, **overrides)  # the worker's own options and tuning
events = app.topic(topic, key_serializer="raw", value_serializer="raw")
seen = {"n": 0, "first": None}

@app.agent(events)
async def count(stream):
    async for _ in stream:
        seen["n"] += 1
        if seen["first"] is None:
            seen["first"] = time.time()
        if seen["n"] == n:
            open(out, "w").write(f"{seen['first']} {time.time()}")

app.main()
'''


def register_bench(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser("stream", help="end-to-end events/s over Kafka vs a bare Faust agent, and paced latency",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stays", type=int, default=100, help="synthetic stays in the replay (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scorers", nargs="+", default=[NEWS2, f"{NEWS2},{MEDM2T}"], metavar="SET",
                   help="one backlog run of the worker per scorer set (a comma list); the paced run uses the first "
                        "(default: news2 news2,medm2t)")
    p.add_argument("--workers", type=int, default=1,
                   help="worker processes that share the input in one consumer group, in the backlog runs and the "
                        "paced run (default 1)")
    p.add_argument("--paced-rate", type=float, default=1000.0,
                   help="mean input events/s of the latency run (its replay speed is set from the cohort's "
                        "clinical span); 0 skips it (default 1000)")
    p.add_argument("--one-per-message", action="store_true",
                   help="replay one event per Kafka message, as a v1 producer (default: observation sets)")
    p.add_argument("--verify", action="store_true",
                   help="after each backlog run, score the same input offline (stream/offline.py, one process, "
                        "no Kafka) and compare every published score with it; a difference is an error")
    p.add_argument("--timeout", type=float, default=900.0, help="give up on a phase after this many s (default 900)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError

    if args.stays < 1:
        raise UserError("--stays must be at least 1")
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    tmp = Path(tempfile.mkdtemp(prefix="medm2t-bench-stream-"))  # kept, with its logs, when a phase fails
    try:
        _phases(args, tmp)
    except KeyboardInterrupt:
        print(f"bench stream: stopped; its logs are in {tmp / 'run'}", file=sys.stderr)
        raise
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


def _phases(args: argparse.Namespace, tmp: Path) -> None:
    with local_stack(tmp, args.timeout, {"MEDM2T_SCORERS": args.scorers[0]},
                     ("--one-per-message",) if args.one_per_message else ()) as bench:
        _progress(f"generating {args.stays} synthetic stays and publishing them at --speed max")
        cohort = bench.cohort(args.stays, args.seed)
        bench.reset()
        n, n_msgs = bench.replay(cohort, "max")
        print(f"stream: {args.stays} synthetic stays, {n:,} events in {n_msgs:,} messages "
              f"({n / n_msgs:.2f} per message) at --speed max into tansu {bench.env['MEDM2T_KAFKA_URL']}, "
              f"Redis {bench.env['MEDM2T_REDIS_URL']}")
        _progress(f"bare Faust agent reading the {n_msgs:,}-message backlog")
        faust_s, cpu = bench.bare_faust(n_msgs)
        print(f"  bare Faust agent (count only) {n / faust_s:>8,.0f} events/s, {n_msgs / faust_s:>8,.0f} msgs/s "
              f"({faust_s:.1f} s; CPU {cpu})")
        for i, scorers in enumerate(args.scorers):
            if i:  # the worker's consumer group has read the backlog: publish it afresh
                bench.reset()
                bench.replay(cohort, "max")
            _progress(f"worker ({scorers}) scoring the backlog")
            worker_s, cpu = bench.worker_backlog(n, args.workers, scorers)
            label = ("worker" if args.workers == 1 else f"{args.workers} workers") + f", {scorers}"
            print(f"  {label:<29} {n / worker_s:>8,.0f} events/s, {n_msgs / worker_s:>8,.0f} msgs/s "
                  f"({worker_s:.1f} s), {faust_s / worker_s:.2f}x bare Faust; CPU {cpu}")
            if args.verify:
                print(f"    verify: {bench.verify(scorers)}")
        if args.paced_rate > 0:
            speed = bench.span_s() * args.paced_rate / n
            _progress(f"paced replay at about {args.paced_rate:,.0f} events/s (about {n / args.paced_rate:.0f} s)")
            bench.reset()
            *result, stages = bench.paced(cohort, speed, args.workers)
            print(_latency_line(speed, *result) + ("" if args.workers == 1 else f", {args.workers} workers"))
            for i, split in enumerate(stages):
                which = "worker" if args.workers == 1 else f"worker {i + 1}"
                print(f"    {which}-side stages (mean / p99 bucket bound, ms): {split}")


@contextmanager
def local_stack(tmp: Path, timeout: float, env: dict[str, str] | None = None,
                replay_options: tuple[str, ...] = ()) -> Iterator[_Bench]:
    """A private tansu broker and Redis under `tmp` (Redis in memory only) and a _Bench on them, whose
    commands get `env` too; both services stop on the way out."""
    from medm2t.cli import UserError
    from stream.services import ServiceError, free_port, kafka_service, redis_service

    kafka, redis = kafka_service(free_port(), tmp / "run"), redis_service(free_port(), tmp / "run", persist=False)
    try:
        kafka.start()
        redis.start()
    except ServiceError as exc:
        kafka.stop()
        raise UserError(str(exc)) from None
    try:
        env = {**os.environ, "MEDM2T_KAFKA_URL": f"127.0.0.1:{kafka.port}",
               "MEDM2T_REDIS_URL": f"redis://127.0.0.1:{redis.port}/0", "MEDM2T_REDIS_PASSWORD": "",
               "MEDM2T_RUN_DIR": str(tmp / "run"), **(env or {})}
        yield _Bench(env, tmp, timeout, {"Redis": redis.pid(), "tansu": kafka.pid()}, replay_options)
    finally:
        redis.stop()
        kafka.stop()


class _Bench:
    def __init__(self, env: dict[str, str], tmp: Path, timeout: float, services: dict[str, int | None],
                 replay_options: tuple[str, ...] = ()):
        self.env, self.tmp, self.timeout, self.services = env, tmp, timeout, services
        self.replay_options = replay_options

    def worker_env(self, n_workers: int) -> dict[str, str]:
        """The environment of one of `n_workers` worker processes, as `medm2t worker --processes N` sets it."""
        settings = self.settings()
        return process_env(n_workers, settings.torch_threads, self.env, cores_each(settings))

    def settings(self):
        from medm2t.settings import RedisSettings, Settings

        return Settings(kafka_url=self.env["MEDM2T_KAFKA_URL"], redis_url=self.env["MEDM2T_REDIS_URL"],
                        redis=RedisSettings(password=""), run_dir=Path(self.env["MEDM2T_RUN_DIR"]))

    def medm2t(self, *argv: str, log: str, wait: bool = True, env: dict[str, str] | None = None) -> subprocess.Popen | None:
        out = open(self.tmp / "run" / f"{log}.log", "ab")
        proc = subprocess.Popen([str(Path(sys.executable).parent / "medm2t"), *argv], env=env or self.env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
        if not wait:
            return proc
        if proc.wait(timeout=self.timeout) != 0:
            _fail(f"`medm2t {' '.join(argv)}` failed; see {out.name}")
        return None

    def cohort(self, stays: int, seed: int) -> Path:
        out = self.tmp / "cohort"
        self.medm2t("synth", "--stays", str(stays), "--seed", str(seed), "--out", str(out), log="synth")
        return out

    def reset(self) -> None:
        """Empty Redis and recreate the topics."""
        from medm2t.connections import redis_sync
        from medm2t.kafka import recreate_topics

        redis_sync(self.settings()).flushdb()
        recreate_topics(self.settings())

    def replay(self, cohort: Path, speed: str, wait: bool = True):
        argv = ("replay", "--mimic", str(cohort / "mimic-iv"), "--ecg", str(cohort / "mimic-iv-ecg"),
                "--mode", "ward", "--speed", speed, "--no-progress", *self.replay_options)
        if not wait:
            return self.medm2t(*argv, log="replay", wait=False)
        self.medm2t(*argv, log="replay")
        return self.input_count()

    def input_count(self) -> tuple[int, int]:
        """Stay events and input messages the last replay published (its summary line; outcomes go alone to
        their own topic)."""
        summary = (self.tmp / "run" / "replay.log").read_text().strip().splitlines()[-1]
        found = re.search(r"replayed \d+ stays, (\d+) events \((.*?)\).* in (\d+) messages", summary)
        if not found:
            _fail(f"no replay summary in {self.tmp / 'run' / 'replay.log'}: {summary!r}")
        kinds = dict((k, int(v)) for k, v in (part.split() for part in found.group(2).split(", ")))
        outcomes = kinds.get("outcome", 0)
        return int(found.group(1)) - outcomes, int(found.group(3)) - outcomes

    def span_s(self) -> float:
        """Clinical seconds from the first to the last input event on the events topic."""
        from medm2t import topics

        times = [datetime.fromisoformat(e["available_time"]) for m in self.read(topics.EVENTS) for e in _events(m.value)]
        return max(1.0, (max(times) - min(times)).total_seconds())

    def read(self, topic: str) -> list:
        from medm2t.kafka import groupless_consumer

        consumer = groupless_consumer(self.settings(), [topic], True, consumer_timeout_ms=3000)
        try:
            return list(consumer)
        finally:
            consumer.close()

    def verify(self, scorers: str) -> str:
        """Every score on the scores topic against an offline run of the events topic's messages, in each
        partition's order (tests/stream prove the same for small cohorts, with faults)."""
        from medm2t import topics
        from medm2t.settings import get_settings, with_overrides
        from stream.offline import MODEL_ROUNDING_STEPS, score_differences, score_key, score_stream, scores_by_stay
        from stream.scorers import select_scorers

        inputs = [(m.partition, m.key, m.value) for m in self.read(topics.EVENTS)]
        _progress(f"verifying: scoring the same {len(inputs):,} input messages offline (not bounded by --timeout)")
        try:
            live, _ = score_stream(m.value for m in self.read(topics.SCORES))
        except ValueError as exc:
            _fail(f"the live scores are not one stream: {exc}")
        settings = with_overrides(get_settings(), scorers=scorers)
        offline = scores_by_stay(select_scorers(settings), inputs, settings.partitions)
        want = {score_key(s): s for scores in offline.values() for s in scores}
        problems = score_differences(live, want, steps=MODEL_ROUNDING_STEPS)
        if problems:
            _fail(f"the live scores differ from the offline run ({len(want):,} scores): " + "; ".join(problems))
        return f"all {len(live):,} scores equal an offline run of the same input (within {MODEL_ROUNDING_STEPS} steps of their published rounding)"

    def bare_faust(self, n: int, app_id: str = "bench-bare-faust", options: dict | None = None,
                   env: dict[str, str] | None = None) -> tuple[float, str]:
        """Seconds a bare Faust agent (the worker's app options, then `options`) takes to count `n` input
        messages from its first, and the CPU shares meanwhile. A new `app_id` reads the backlog afresh."""
        from medm2t import topics

        script, done = self.tmp / "bare_faust.py", self.tmp / f"{app_id}.done"
        script.write_text(BARE_FAUST)
        with open(self.tmp / "run" / "bare-faust.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, str(script), str(n), str(done), topics.EVENTS, app_id,
                                     json.dumps(options or {}), "worker", "-l", "warn", "--without-web"],
                                    cwd=self.tmp, env={**self.env, **(env or {})}, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            cpu = _CpuMeter({"agent": proc.pid, **self.services})
            self._wait(done.exists, "the bare Faust agent to count every message", proc, poll=0.05)
            first, last = map(float, done.read_text().split())
            return last - first, cpu.shares()
        finally:
            _stop(proc)

    def worker_backlog(self, n: int, n_workers: int, scorers: str) -> tuple[float, str]:
        """Seconds from the first event applied until every point is scored, and the CPU shares meanwhile."""
        workers = [self.medm2t("worker", "--scorers", scorers, log=f"worker-backlog-{i}", wait=False,
                               env=self.worker_env(n_workers))
                   for i in range(n_workers)]
        try:
            r = self._redis()
            self._wait(lambda: _applied(r)[0] > 0, "the worker's first event", workers, poll=0.05)
            names = {"worker": workers[0].pid} if n_workers == 1 else {f"worker{i + 1}": w.pid for i, w in enumerate(workers)}
            first, cpu = time.monotonic(), _CpuMeter({**names, **self.services})
            self._wait(lambda: _applied(r) == (n, True), "the workers to score every point", workers,
                       poll=max(0.1, n / 2_000_000))
            seconds, shares = time.monotonic() - first, cpu.shares()
            stays = sum(1 for _ in r.scan_iter(match="{stay:*}:meta", count=1000))
            rss = ", ".join(f"{name} {_peak_rss(pid)}" for name, pid in {**names, **self.services}.items())
            memory = f"peak RSS {rss}; Redis {r.info('memory')['used_memory'] / max(1, stays) / 1e6:.2f} MB per stay"
            return seconds, f"{shares}; {memory}"
        finally:
            for worker in workers:
                _stop(worker)

    def paced(self, cohort: Path, speed: float, n_workers: int
              ) -> tuple[list[float], int, int, float, float, list[str]]:
        """(latencies in ms, scores matched, scores left out, mean and busiest-5-s input events/s, each
        worker's stage split) of a paced replay. A ward replay's rate follows its census: busier in the
        middle, when most stays are open."""
        from medm2t import topics
        from stream.services import free_port

        ports = [free_port() for _ in range(n_workers)]
        workers = [self.medm2t("worker", "--metrics-port", str(port), log=f"worker-paced-{i}", wait=False,
                               env=self.worker_env(n_workers))
                   for i, port in enumerate(ports)]
        try:
            logs = [self.tmp / "run" / f"worker-paced-{i}.log" for i in range(n_workers)]
            self._wait(lambda: all("assigned partitions" in log.read_text() for log in logs),
                       "the workers to join their group", workers)
            start = time.monotonic()
            replay = self.replay(cohort, f"{speed:g}", wait=False)
            self._wait(lambda: replay.poll() is not None, "the paced replay", workers)
            seconds = time.monotonic() - start
            n, _ = self.input_count()
            r = self._redis()
            self._wait(lambda: _applied(r) == (n, True), "the workers to score every point", workers, poll=0.1)
            stages = [_stage_split(port) for port in ports]
        finally:
            for worker in workers:
                _stop(worker)
        first_at: dict[tuple[int, str], int] = {}
        per_window: dict[int, int] = defaultdict(int)  # input events per 5 s of Kafka time
        for m in self.read(topics.EVENTS):
            for e in _events(m.value):
                key = (e["stay_id"], e["available_time"])
                first_at[key] = min(first_at.get(key, m.timestamp), m.timestamp)
                per_window[m.timestamp // 5000] += 1
        latencies, missed = [], 0
        for m in self.read(topics.SCORES):
            s = json.loads(m.value)
            t = first_at.get((s["stay_id"], s["scored_at"]))
            if t is None:
                missed += 1
            else:
                latencies.append(m.timestamp - t)
        return latencies, len(latencies), missed, n / seconds, max(per_window.values(), default=0) / 5, stages

    def _redis(self):
        from medm2t.connections import redis_sync

        return redis_sync(self.settings())

    def _wait(self, predicate, what: str, procs, poll: float = 0.5) -> None:
        """Poll `predicate` until true; fail when one of `procs` (a process or a list) exits or on timeout."""
        deadline = time.monotonic() + self.timeout
        while not predicate():
            for proc in procs if isinstance(procs, list) else [procs]:
                if proc.poll() is not None:
                    _fail(f"gave up waiting for {what}: a process exited ({proc.returncode}); "
                          f"logs in {self.tmp / 'run'}")
            if time.monotonic() > deadline:
                _fail(f"gave up waiting for {what} after {self.timeout:.0f} s")
            time.sleep(poll)


def _progress(message: str) -> None:
    """What the benchmark is doing now (stderr; the figures go to stdout): its phases take minutes."""
    print(f"bench stream: {message} ...", file=sys.stderr, flush=True)


def _fail(message: str):
    from medm2t.cli import UserError

    raise UserError(message)


def _applied(r) -> tuple[int, bool]:
    """(events applied, every stay scored up to its clock) from the stays' meta hashes."""
    applied, idle = 0, True
    keys = list(r.scan_iter(match="{stay:*}:meta", count=1000))
    # One round trip per 1,000 stays, and a large ward polled less often (see the caller): the poll must not
    # load the machine it measures.
    for start in range(0, len(keys), 1000):
        pipe = r.pipeline(transaction=False)
        for k in keys[start:start + 1000]:
            pipe.hmget(k, "clock", "scored", "n_events")
        for clock, scored, n_events in pipe.execute():
            if clock and (not scored or float(clock) > float(scored)):
                idle = False
            applied += int(n_events or 0)
    return applied, idle


def _peak_rss(pid: int) -> str:
    """The process's peak resident set so far (Linux's VmHWM), and its model process's if it has one."""
    import psutil

    mb = [_peak_rss_mb(p) for p in [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]]
    model = max(mb[1:], default=0)  # (its other child, multiprocessing's resource tracker, is small)
    return f"{mb[0]:,.0f} MB" + (f" + model process {model:,.0f} MB" if model else "")


def _peak_rss_mb(pid: int) -> float:
    """The process's peak resident set so far (Linux's VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class _CpuMeter:
    """CPU time of some processes (their threads and child processes included: a worker's model process) from
    now on, as shares of one core."""

    def __init__(self, pids: dict[str, int | None]):
        import psutil

        self.procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}
        self.start, self.used = time.monotonic(), {name: self._cpu(p) for name, p in self.procs.items()}

    @staticmethod
    def _cpu(proc) -> float:
        return sum(t.user + t.system for t in (p.cpu_times() for p in [proc, *proc.children(recursive=True)]))

    def shares(self) -> str:
        wall = max(1e-9, time.monotonic() - self.start)
        return ", ".join(f"{name} {(self._cpu(p) - self.used[name]) / wall:.0%}" for name, p in self.procs.items())


def _stage_split(metrics_port: int) -> str:
    """Mean and p99 (as the upper bound of its histogram bucket) of each stage the worker measures."""
    from urllib.request import urlopen

    from prometheus_client.parser import text_string_to_metric_families

    from stream.metrics import STAGES

    text = urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    buckets: dict[str, list[tuple[float, float]]] = {}
    sums: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "medm2t_point_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage")
            if sample.name.endswith("_bucket"):
                buckets.setdefault(stage, []).append((float(sample.labels["le"]), sample.value))
            elif sample.name.endswith("_sum"):
                sums[stage] = sample.value
    parts = []
    for stage in STAGES:
        cumulative = sorted(buckets.get(stage, []))
        total = cumulative[-1][1] if cumulative else 0
        if not total:
            continue
        p99 = next(le for le, n in cumulative if n >= 0.99 * total)
        parts.append(f"{stage} {1000 * sums[stage] / total:.0f} / ≤{1000 * p99:g}")
    return ", ".join(parts) or "none measured"


def _stop(proc: subprocess.Popen) -> None:
    from stream.services import stop_process_group

    stop_process_group(proc, timeout=20)


def _latency_line(speed: float, latencies: list[float], matched: int, missed: int, rate: float, peak: float) -> str:
    if not latencies:
        return f"  paced x{speed:g}: no score matched an input point"
    from medm2t.cli.bench import nearest_rank

    ms = sorted(latencies)
    q = lambda p: nearest_rank(ms, p)
    return (f"  paced x{speed:g} ({rate:,.0f} input events/s, {peak:,.0f} in the busiest 5 s): "
            f"event→score latency p50 {q(0.5):.0f} ms, "
            f"p99 {q(0.99):.0f} ms, max {ms[-1]:.0f} ms over {matched:,} scores "
            f"({missed:,} at points a late event moved, left out)")


def _events(value: bytes) -> list[dict]:
    """The events of one input message: itself, or an observation set's members."""
    doc = json.loads(value)
    return doc["events"] if doc.get("kind") == "observation_set" else [doc]
