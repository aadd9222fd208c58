"""Driving the worker's pipeline without Kafka: an in-memory sink for its outputs and a loop that feeds it a
backlog the way the worker does (chunk by chunk, scoring what is ready after each). `medm2t bench pipeline`
and the fuzz tests use it; the worker itself uses stream/worker.py."""
from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Callable, ContextManager, Iterable, Sequence

from medm2t import topics
from medm2t.events import PUBLISHED_DIGITS, RiskScore
from stream.ingest import INGEST_CHUNK
from stream.pipeline import LANES, Pipeline
from stream.runtime import Message


class MemorySink:
    """Pipeline `send` that keeps each topic's values in order and delivers at once."""

    def __init__(self):
        self.sent: dict[str, list[bytes]] = defaultdict(list)

    async def send(self, topic: str, key: bytes | None, value: bytes):
        self.sent[topic].append(value)
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered


@dataclass
class Batches:
    """Stays and seconds of each scoring batch."""
    sizes: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    forward: dict[str, Counter] = field(default_factory=dict)  # cadence scorer -> {points per pass: passes}


async def score_all_ready(pipeline: Pipeline, batches: Batches | None = None) -> None:
    """Score until no point is ready and no lane holds a stay, in the pipeline's lanes as the worker does."""
    async def lane():
        while True:
            start = time.perf_counter()
            if n := await pipeline.score_ready():
                if batches is not None:
                    batches.sizes.append(n)
                    batches.seconds.append(time.perf_counter() - start)
            elif pipeline.in_lanes:
                await pipeline.batch_committed()  # the other lane's stays may have more points
            else:
                return

    await asyncio.gather(*(lane() for _ in range(LANES)))


async def feed(pipeline: Pipeline, messages: Sequence[tuple[int, bytes | None, bytes]], chunk: int = INGEST_CHUNK,
               batches: Batches | None = None,
               around_chunk: Callable[[int, int], ContextManager] | None = None) -> None:
    """Ingest (partition, key, value) messages in chunks, offsets counted from 0, scoring what is ready after
    each chunk, then end the stream (every partition quiet and caught up) so that every point completes.
    `around_chunk(n, n_chunks)`, if given, wraps the ingest of chunk n (tests use it to inject faults)."""
    starts = range(0, len(messages), chunk)
    for n, start in enumerate(starts):
        now = time.time()  # as if each chunk had been produced and delivered just now
        batch = [Message(topics.EVENTS, p, start + i, k, v, now * 1000.0, now)
                 for i, (p, k, v) in enumerate(messages[start:start + chunk])]
        if around_chunk is None:
            await pipeline.ingest(batch)
        else:
            with around_chunk(n, len(starts)):
                await pipeline.ingest(batch)
        await score_all_ready(pipeline, batches)
    pipeline.clocks.idle_s = 0.0
    await score_all_ready(pipeline, batches)


def backlog(stays, partitions: int) -> tuple[list[tuple[int, bytes, bytes]], list]:
    """A recorded replay of `stays` (lists of events) as (partition, key, value) input messages in release
    order, keyed by stay as `medm2t replay` sends them, and the stays' Outcome events, which stay apart."""
    from medm2t.events import set_messages
    from replay.engine import by_message, merge_recorded

    messages, outcomes = [], []
    for _, events in by_message(merge_recorded(stays)):
        if events[0].kind == "outcome":
            outcomes += events
        else:
            sid = events[0].stay_id
            messages += [(sid % partitions, str(sid).encode(), value) for value, _ in set_messages(events)]
    return messages, outcomes


async def run_backlog(redis_url: str, scorers, messages, partitions: int, batches: Batches | None = None,
                      flush: bool = True, **pipeline_options) -> MemorySink:
    """Feed `messages` through a fresh pipeline on the Redis db at `redis_url` (no Kafka), emptied first
    unless `flush` is False; returns what it published, topic by topic."""
    from medm2t.connections import redis_async
    from medm2t.settings import RedisSettings, Settings
    from stream.state import StayStore

    redis = redis_async(Settings(redis_url=redis_url, redis=RedisSettings(password="")))
    try:
        if flush:
            await redis.flushdb()
        sink = MemorySink()
        pipeline = Pipeline(StayStore(redis, [s.needs for s in scorers]), scorers, sink.send,
                            **{"idle_ms": 10**9, **pipeline_options})
        await pipeline.assign(set(range(partitions)))
        await feed(pipeline, messages, batches=batches)
        if batches is not None:
            batches.forward.update(pipeline.forward_sizes)
        return sink
    finally:
        await redis.aclose()


MODEL_ROUNDING_STEPS = 2  # a model's value may differ by this many steps of its published rounding (see below)


def score_key(score) -> tuple:
    """What identifies a score in the contract: (stay, scorer, clinical time of its point)."""
    return score.stay_id, score.scorer, score.scored_at


def score_differences(got: dict[tuple, RiskScore], want: dict[tuple, RiskScore], steps: int = 0) -> list[str]:
    """Two score streams keyed by `score_key`, compared: human-readable differences, empty when they agree.
    A model's task values may differ by `steps` of their published rounding (PUBLISHED_DIGITS): float32
    batches of other shapes may land on the other side of a rounding step."""
    problems = []
    missing, extra = set(want) - set(got), set(got) - set(want)
    if missing:
        problems.append(f"{len(missing)} points never scored, e.g. {sorted(missing)[:3]}")
    if extra:
        problems.append(f"{len(extra)} points scored that the other stream does not have, e.g. {sorted(extra)[:3]}")
    for k in sorted(set(got) & set(want)):
        g, w = task_values(got[k]), task_values(want[k])
        tol = {t: steps * 10.0 ** -PUBLISHED_DIGITS.get(task.kind, math.inf) * 1.001 for t, task in got[k].tasks.items()}
        same_inputs = (got[k].inputs_seen, got[k].subject_id) == (want[k].inputs_seen, want[k].subject_id)
        if g.keys() != w.keys() or any(abs(g[t] - w[t]) > tol[t] for t in g) or not same_inputs:
            problems.append(f"{k}: got {g} ({got[k].inputs_seen} inputs), want {w} ({want[k].inputs_seen})")
            if len(problems) > 10:
                break
    return problems


def score_stream(messages: Iterable[bytes]) -> tuple[dict[tuple, RiskScore], int]:
    """Distinct scores by `score_key` from raw risk.scores.v1 values, and the number of messages. A point
    published again (a redelivery) must carry the same score id and values: ValueError otherwise."""
    out: dict[tuple, RiskScore] = {}
    n = 0
    for raw in messages:
        n += 1
        s = RiskScore.model_validate_json(raw)
        k = score_key(s)
        if k in out and (out[k].score_id != s.score_id or task_values(out[k]) != task_values(s)):
            raise ValueError(f"{k} published with two values: {task_values(out[k])} and {task_values(s)}")
        out[k] = s
    return out, n


def task_values(score: RiskScore) -> dict[str, float]:
    """Each task's published value."""
    return {name: t.value for name, t in score.tasks.items()}


def scores_by_stay(scorers, messages, partitions: int = 6) -> dict[int, list]:
    """Score a backlog offline on a private, throwaway Redis: each stay's RiskScores in point order (what a
    live recorded replay publishes; `medm2t alerts calibrate` and tools/policy_figures.py read them)."""
    import tempfile
    from pathlib import Path

    from stream.services import free_port, redis_service

    with tempfile.TemporaryDirectory(prefix="medm2t-offline-") as tmp:
        redis = redis_service(free_port(), Path(tmp), persist=False)
        redis.start()
        try:
            sink = asyncio.run(run_backlog(f"redis://127.0.0.1:{redis.port}/0", scorers, messages, partitions))
        finally:
            redis.stop()
    out: dict[int, list] = defaultdict(list)
    for raw in sink.sent[topics.SCORES]:
        score = RiskScore.model_validate_json(raw)
        out[score.stay_id].append(score)
    return out
