"""`medm2t bench pipeline`: the worker's core (validate, APPLY to Redis, complete points, score, COMMIT) on a
backlog, in one process on a real Redis that it starts itself. Kafka is left out, so the figures are
the ceiling the core allows; the broker and Faust come on top (docs/benchmarks.md has end-to-end runs)."""
from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from medm2t import topics
from medm2t.cli.bench import nearest_rank

PARTITIONS = 6


def register_bench(bsub: argparse._SubParsersAction) -> None:
    p = bsub.add_parser("pipeline", help="throughput of the worker core on a backlog, and cost per event vs history",
                        description="Replay a synthetic cohort as a backlog through the worker's pipeline on a "
                                    "fresh local Redis (no Kafka) and print events/s, scores, batch sizes and "
                                    "batch times per scorer set, and each cadence scorer's points per model pass "
                                    "(MEDM2T_BATCH_MAX, on MEDM2T_DEVICE, in a process of its own under "
                                    "MEDM2T_MODEL_PROCESS=1); then the cost of one new event at "
                                    "short and long stay histories, with NEWS2 and, when a set has medm2t, with "
                                    "NEWS2 + MedM2T scoring every point. On a GPU: tools/bench_gpu.sh.")
    p.add_argument("--stays", type=int, default=100, help="synthetic stays in the backlog (default 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scorers", default="news2;news2,medm2t",
                   help="scorer sets to run, ';'-separated (default 'news2;news2,medm2t')")
    p.add_argument("--checkpoint", type=Path, default=None, help="MedM2T checkpoint (default: the settings')")
    p.add_argument("--histories", default="20,2000", help="history lengths for the per-event cost (default 20,2000)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError
    from medm2t.settings import Settings
    from stream.ingest import INGEST_CHUNK
    from stream.pipeline import LANES, lane_points
    from stream.services import free_port, redis_service

    if args.stays < 1:
        raise UserError("--stays must be at least 1")
    settings = Settings()
    checkpoint = args.checkpoint or settings.checkpoint
    settings = settings.model_copy(update={"checkpoint": checkpoint})
    scorer_sets = [(names, _scorers(names.split(","), settings)) for names in args.scorers.split(";")]
    histories = _histories(args.histories)
    with tempfile.TemporaryDirectory(prefix="medm2t-bench-pipeline-") as tmp:
        redis = redis_service(free_port(), Path(tmp), persist=False)
        redis.start()
        try:
            url = f"redis://127.0.0.1:{redis.port}/0"
            messages = _backlog(args.stays, args.seed, Path(tmp) / "cohort")
            devices = {s.name: f"on {s.predictor.device}" if hasattr(s, "predictor") else "in a process of its own"
                       for _, ss in scorer_sets for s in ss if s.needs.cadence is not None}
            print(f"pipeline: {args.stays} synthetic stays, {len(messages):,} events, {PARTITIONS} partitions, "
                  f"chunks of {INGEST_CHUNK}, {LANES} scoring lanes of at most {lane_points(settings.batch_max)} stays "
                  f"and {settings.batch_max} points per pass, Redis at {url} (no Kafka)"
                  + "".join(f", {name} {where}" for name, where in devices.items()))
            for names, scorers in scorer_sets:
                figures = asyncio.run(_backlog_run(url, scorers, messages, settings.batch_max))
                print(_format(names, figures))
            with_medm2t = any(s.needs.cadence is not None for _, ss in scorer_sets for s in ss)
            for label, scorers in _per_event_sets(settings if with_medm2t else None):
                for h in histories:
                    us = asyncio.run(_per_event_cost(url, h, scorers))
                    print(f"  per new event, {label}, 64 stays with {h:,} events of history each: {us:,.0f} µs")
        finally:
            redis.stop()
    return 0


def _histories(text: str) -> list[int]:
    from medm2t.cli import UserError

    try:
        out = [int(x) for x in text.split(",")]
    except ValueError:
        raise UserError(f"--histories must be comma-separated whole numbers, not {text!r}") from None
    if any(h < 1 for h in out):
        raise UserError("--histories must all be at least 1")
    return out


def _scorers(names: list[str], settings):
    from medm2t.cli import UserError
    from medm2t.vocabulary import MEDM2T, NEWS2
    from stream.scorers.news2 import News2Scorer

    out = []
    for name in names:
        if name == NEWS2:
            out.append(News2Scorer())
        elif name == MEDM2T:
            from stream.scorers import ScorerConfigError, medm2t_scorer

            if not (settings.checkpoint / "meta.json").exists():
                raise UserError(f"no MedM2T checkpoint at {settings.checkpoint} (run `make demo` once, or pass "
                                "--checkpoint)")
            try:
                out.append(medm2t_scorer(settings))
            except ScorerConfigError as exc:
                raise UserError(str(exc)) from None
        else:
            raise UserError(f"unknown scorer {name!r} in --scorers (news2, medm2t)")
    return out


def _backlog(stays: int, seed: int, out: Path) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value) of a ward replay of a fresh synthetic cohort, in release order."""
    from medm2t.events import dump_event
    from replay.engine import merge_ward
    from replay.sources import parse_spec
    from replay.synth import generate

    generate(stays, seed, out, progress=False)
    released = merge_ward(parse_spec(f"synth:{out}").stays(), 24, datetime(2031, 3, 1, 8), seed=seed)
    return [(e.stay_id % PARTITIONS, str(e.stay_id).encode(), dump_event(e))
            for e in (r.event for r in released) if e.kind != "outcome"]


async def _pipeline(url: str, scorers, idle_ms: int):
    from medm2t.connections import redis_async
    from medm2t.settings import RedisSettings, Settings
    from stream.offline import MemorySink
    from stream.pipeline import Pipeline
    from stream.state import StayStore

    redis = redis_async(Settings(redis_url=url, redis=RedisSettings(password="")))
    await redis.flushdb()
    sink = MemorySink()
    pipeline = Pipeline(StayStore(redis, [s.needs for s in scorers]), scorers, sink.send, idle_ms=idle_ms)
    await pipeline.assign(set(range(PARTITIONS)))
    return pipeline, sink, redis


async def _backlog_run(url: str, scorers, messages, batch_max: int) -> dict:
    from stream.offline import Batches, run_backlog

    batches = Batches()
    start = time.perf_counter()
    sink = await run_backlog(url, scorers, messages, PARTITIONS, batches, batch_max=batch_max)
    seconds = time.perf_counter() - start
    return {"events": len(messages), "seconds": seconds, "scores": len(sink.sent[topics.SCORES]),
            "alerts": len(sink.sent[topics.ALERTS]), "sizes": batches.sizes, "times": batches.seconds,
            "forward": batches.forward}


def _per_event_sets(settings) -> list[tuple[str, list]]:
    """NEWS2 alone, and with MedM2T (when `settings`: it runs) scoring every point, so that its cost is in every
    event."""
    from stream.scorers.news2 import News2Scorer

    sets = [("NEWS2", [News2Scorer()])]
    if settings is not None:
        every_point = settings.model_copy(update={"medm2t_cadence_min": 0.0})
        sets.append(("NEWS2 + MedM2T at every point", _scorers(["news2", "medm2t"], every_point)))
    return sets


async def _per_event_cost(url: str, history: int, scorers, n_stays: int = 64, rounds: int = 10) -> float:
    """µs per new event (ingest + score + commit) for stays that already hold `history` heart rates."""
    from medm2t.events import Measurement, StaticFeatures, StayOpened, dump_event, make_event_id
    from stream.offline import score_all_ready
    from stream.runtime import Message

    t0 = datetime(2031, 3, 1, 8)

    def opened(sid: int) -> bytes:
        return dump_event(StayOpened(event_id=make_event_id("bench", sid, "open"), stay_id=sid, subject_id=sid,
                                     time=t0, available_time=t0, source="bench",
                                     static=StaticFeatures(gender="F", age=70.0, first_careunit="MICU")))

    def hr(sid: int, k: int, available_k: int | None = None) -> bytes:
        at = t0 + timedelta(seconds=30 * (k + 1))
        available = at if available_k is None else t0 + timedelta(seconds=30 * (available_k + 1))
        return dump_event(Measurement(event_id=make_event_id("bench", sid, k), stay_id=sid, subject_id=sid,
                                      time=at, available_time=available, source="bench", item="220045", category="vital",
                                      concept="hr", value=70.0 + k % 40))

    pipeline, _, redis = await _pipeline(url, scorers, idle_ms=0)
    try:
        await pipeline.ingest([Message(topics.EVENTS, 0, s - 1, str(s).encode(), opened(s)) for s in range(1, n_stays + 1)])
        offset = n_stays
        for k in range(0, history, 500):  # fill the histories, untimed, released in blocks: one point per block
            block_end = min(k + 500, history) - 1
            msgs = [Message(topics.EVENTS, 0, offset + j, str(sid).encode(), hr(sid, kk, block_end))
                    for j, (sid, kk) in enumerate((s, kk) for kk in range(k, min(k + 500, history))
                                                  for s in range(1, n_stays + 1))]
            offset += len(msgs)
            await pipeline.ingest(msgs)
            await score_all_ready(pipeline)
        start = time.perf_counter()
        for k in range(history, history + rounds):
            await pipeline.ingest([Message(topics.EVENTS, 0, offset + s, str(s).encode(), hr(s, k))
                                   for s in range(1, n_stays + 1)])
            offset += n_stays
            await score_all_ready(pipeline)
        return (time.perf_counter() - start) / (rounds * n_stays) * 1e6
    finally:
        await redis.aclose()


def _format(names: str, f: dict) -> str:
    sizes, times = f["sizes"], sorted(f["times"])
    p = lambda q: nearest_rank(times, q) * 1000
    return (f"  {names:<14} {f['events'] / f['seconds']:>8,.0f} events/s ({f['seconds']:.1f} s), "
            f"{f['scores']:,} scores, {f['alerts']:,} alerts, {len(sizes)} batches of "
            f"{statistics.mean(sizes) if sizes else 0:.0f} stays on average (max {max(sizes, default=0)}), "
            f"batch time p50 {p(0.5):.0f} ms, p99 {p(0.99):.0f} ms"
            + "".join(_forward(name, passes, f["seconds"]) for name, passes in f["forward"].items()))


def _forward(scorer: str, passes: dict[int, int], seconds: float) -> str:
    """One cadence scorer's forward passes: how many points each held (the model's batch sizes)."""
    sizes = sorted(n for n, k in passes.items() for _ in range(k))
    if not sizes:
        return ""
    q = lambda x: nearest_rank(sizes, x)  # noqa: E731
    return (f"\n  {'':<14} {scorer}: {sum(sizes):,} points in {len(sizes):,} passes ({sum(sizes) / seconds:,.0f} "
            f"scores/s), points per pass mean {statistics.mean(sizes):.0f}, p10 {q(0.1)}, p50 {q(0.5)}, "
            f"p90 {q(0.9)}, max {sizes[-1]}")
