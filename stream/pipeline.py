"""The worker's transport-independent core: ingest validated events into per-stay state, find the scoring
points that are complete, score them in batches and publish. docs/scoring-contract.md states the contract
this code keeps; the names below follow it.

* Ingest (stream/ingest.py, one call per Kafka chunk): validate, dead-letter what is bad, APPLY each stay's
  events in Redis (durable, idempotent), and buffer the new events in memory under their effective point.
* Completion (stream/clocks.py): a stay's point T is complete once its partition has delivered an event
  available after T, the stay has closed at or after T, or the partition has been quiet and caught up.
* Scoring (this module's loop, its own task): complete points in point order, batched by the scheduler
  (stream/scheduler.py): every-point scorers (NEWS2) score each point; cadence scorers (MedM2T) the points
  their cadence, a NEWS2 band change or the stay's close calls for, many in one pass off the event loop.
  Outputs are published, then COMMITted to Redis (stream/publish.py), so a crash in between only
  republishes the same scores under the same ids.
* People's actions on alerts (stream/action_intake.py) are applied by the same loop, between batches.

Scorer state lives in this process for the stays of the partitions it owns (stream/runtime.py); it is
rebuilt from Redis on start-up, on rebalance and for a stay it has not seen.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from datetime import datetime
from typing import Any, Awaitable, Callable, Sequence

from medm2t import topics
from medm2t.events import AlertAction, DeadLetter
from stream import metrics
from stream.action_intake import ActionIntake
from stream.alerts import AlertRules, next_timer
from stream.clocks import PartitionClocks
from stream.ingest import Ingest
from stream.policy import DEFAULT_POLICY, AlertPolicy
from stream.publish import Publish
from stream.runtime import Message, Send, StayRuntime
from stream.scheduler import collect_due, submit_due, take
from stream.scoring import Scorer
from stream.state import StayStore

log = logging.getLogger("medm2t.worker")
RESTORE_GRACE_S = 5.0


class Pipeline(Ingest, ActionIntake, Publish):
    """The parts above that act on the pipeline's own state (ingest, action intake, publish) are mixins of
    this class, each in its own module; the clocks and the scheduler hold or need no such state and are an
    object and functions of their own. This module holds the state, what the parts share (Redis retries,
    dead letters, the counters that ride along with the next round trip), the stays in memory and the loop."""

    def __init__(self, store: StayStore, scorers: Sequence[Scorer], send: Send, batch_max: int = 256,
                 idle_ms: int = 100, caught_up: Callable[[int], bool] = lambda p: True,
                 policy: AlertPolicy = DEFAULT_POLICY):
        self.store, self.scorers, self.send = store, list(scorers), send
        self.rules = AlertRules(policy)  # the pipeline runs the alert policy; StayStore only stores
        self.batch_max = batch_max
        self.stays: dict[int, StayRuntime] = {}
        self.clocks = PartitionClocks(idle_ms / 1000.0, caught_up)
        self.stats: dict[str, int] = defaultdict(int)
        self.forward_sizes: dict[str, Counter] = defaultdict(Counter)  # cadence scorer -> {points per pass: passes}
        self._uncounted: dict[str, int] = defaultdict(int)  # Redis counters not yet written: they ride along
                                                             # with the next round trip (or the next idle tick)
        self._actions: list[tuple[Message, AlertAction]] = []  # valid actions, applied by the scoring loop
        self._wake = asyncio.Event()
        self._batch_done = asyncio.Event()  # set after each committed batch (room_to_buffer waits for it)
        self._state = asyncio.Lock()    # held while clocks, buffers or the set of stays change
        self.in_lanes: set[int] = set()  # stays in a scoring lane's batch, from their take to their commit

    # ---- Redis and the stays held in memory ------------------------------------------------------

    async def with_redis(self, what: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """Run `call` until Redis answers: a Redis restart or outage pauses the worker, it never kills it.
        A retry after a lost reply changes nothing in Redis; APPLY's reply says where each duplicate was
        first applied, so the events of a lost reply are still buffered (see _lost_reply)."""
        from redis.exceptions import ConnectionError as RedisDown, NoScriptError, TimeoutError as RedisSlow

        delay = 0.2
        while True:
            try:
                return await call()
            except NoScriptError:  # a restarted Redis has an empty script cache
                await self.with_redis("script load", self.store.load_scripts)
            except (RedisDown, RedisSlow, OSError) as exc:
                self.stats["redis_retries"] += 1
                log.warning("Redis unavailable during %s (%s); retrying in %.1f s", what, type(exc).__name__, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _take_uncounted(self) -> dict[str, int]:
        counts, self._uncounted = dict(self._uncounted), defaultdict(int)
        return counts

    async def _write_uncounted(self) -> None:
        counts = self._take_uncounted()

        async def write():
            pipe = self.store.r.pipeline(transaction=False)
            self.store.note_counts(pipe, counts)
            return await pipe.execute()

        await self.with_redis("counters", write)

    async def dead_letter(self, msg: Message, reason: str) -> None:
        await self.dead_letters(msg, [reason])

    async def dead_letters(self, msg: Message, reasons: Sequence[str]) -> None:
        """One dead letter per reason (a set's bad members each have their own), delivered together."""
        at = datetime.utcnow()
        log.warning("dead letter topic=%s partition=%s offset=%s reason=%s%s", msg.topic, msg.partition, msg.offset,
                    reasons[0][:200], f" (and {len(reasons) - 1} more)" if len(reasons) > 1 else "")
        deliveries = [await self.send(topics.DEADLETTER, None, DeadLetter(
            topic=msg.topic, partition=msg.partition, offset=msg.offset, reason=reason[:500], at=at,
        ).model_dump_json().encode()) for reason in reasons]
        await asyncio.gather(*deliveries)
        self.stats["deadletters"] += len(reasons)
        self._uncounted["deadletters"] += len(reasons)
        metrics.count("deadletters", len(reasons))

    async def _ensure_loaded(self, stays: Sequence[tuple[int, int | None]]) -> None:
        missing = [(sid, p) for sid, p in stays if sid not in self.stays]
        if not missing:
            return
        stored = await self.with_redis("state load", lambda: self.store.load([sid for sid, _ in missing]))
        for (sid, p), st in zip(missing, stored):
            rt = self.stays[sid] = StayRuntime.rebuild(st, -1 if p is None else p, self.scorers)
            self.set_timer(rt)

    def forget_if_finished(self, stay_id: int) -> None:
        """A closed stay with nothing left to score leaves memory."""
        rt = self.stays.get(stay_id)
        if rt is not None and rt.finished:
            del self.stays[stay_id]

    def set_timer(self, rt: StayRuntime) -> None:
        """The stay's earliest alert timer (escalation, snooze end). Timers after the stay's close never fire."""
        due = [t for key, st in rt.alert_state.items()
               if (t := next_timer(self.rules.by_key(key), st, self.rules.policy)) is not None
               and (rt.closed_at is None or t <= rt.closed_at)]
        rt.timer = min(due, default=None)

    async def assign(self, partitions: set[int]) -> None:
        """A rebalance gave this worker `partitions`: forget the others' stays, rebuild our pending ones."""
        async with self._state:
            await self._assign(partitions)
        self._wake.set()

    async def _assign(self, partitions: set[int]) -> None:
        for sid in [sid for sid, rt in self.stays.items() if rt.partition not in partitions]:
            del self.stays[sid]
        self.clocks.assign(partitions, await self.with_redis("input offsets", self.store.input_offsets))
        pending = await self.with_redis("pending scan", self.store.pending_stays)
        await self._ensure_loaded([(sid, p) for sid, p in pending.items() if p in partitions])
        for rt in self.stays.values():
            self.clocks.restored(rt, RESTORE_GRACE_S)
        log.info("assigned partitions %s: %d stays with pending points", sorted(partitions),
                 sum(1 for p in pending.values() if p in partitions))

    # ---- the scoring loop ---------------------------------------------------------------------------

    def ready(self) -> list[StayRuntime]:
        """Stays whose first unscored point is complete, or whose alert timer is: complete like a point, with
        no unscored point before it; none that a lane holds. A lane's share: at most 1/LANES of these and the
        stays held together (so that the other lane finds work when it comes back), and at most
        `lane_points(batch_max)` stays: `take` lets each stay after the one that fills the pass add its first
        due point, so that a pass never holds more than `batch_max` points."""
        free = [rt for rt in self.stays.values() if rt.stay_id not in self.in_lanes and self._is_ready(rt)]
        share = -(-(len(free) + len(self.in_lanes)) // LANES)
        return free[:min(share, lane_points(self.batch_max))]

    def _is_ready(self, rt: StayRuntime) -> bool:
        first = min(rt.buffer) if rt.buffer else None
        if first is not None and self.clocks.complete(rt, first):
            return True
        return rt.timer is not None and (first is None or rt.timer < first) and self.clocks.complete(rt, rt.timer)

    def pending_points(self) -> int:
        return sum(len(rt.buffer) for rt in self.stays.values())

    async def room_to_buffer(self, max_pending: int, recheck_s: float = 1.0) -> None:
        """Wait while more than `max_pending` points wait for their scores and some of them can be scored.
        Under a backlog ingest runs far ahead of a model-bound scoring loop, and every buffered point holds
        its events in memory (a 1,000-stay backlog held 190,000 points, 2.1-2.4 GB per worker). A live
        consumer waits here between chunks, so the broker keeps the backlog instead; the scoring loop must
        be running beside it. It looks again after each batch the loop commits (or `recheck_s`)."""
        while self.pending_points() > max_pending and any(map(self._is_ready, self.stays.values())):
            self._batch_done.clear()
            self._wake.set()
            try:
                await asyncio.wait_for(self._batch_done.wait(), timeout=recheck_s)
            except asyncio.TimeoutError:
                pass

    async def run(self, tick_s: float = 0.02) -> None:
        """The scoring loop, in LANES lanes over distinct stays: while the model scores one lane's batch, the
        event loop takes the other lane's points (NEWS2 included) or publishes its scores, so the two overlap.
        A stay is in one lane's batch at a time, taken, scored and published as in a batch of its own, so the
        lanes change no score."""
        await asyncio.gather(*(self._lane(tick_s) for _ in range(LANES)))

    async def _lane(self, tick_s: float) -> None:
        """Score whatever is complete, at once; wait when nothing is."""
        while True:
            acted = await self.apply_actions()
            if not await self.score_ready() and not acted:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=tick_s)
                except asyncio.TimeoutError:
                    pass

    async def score_ready(self) -> int:
        """Score one batch of ready stays (`ready`), holding them in this lane until they are committed.
        Returns how many stays it scored."""
        start = time.perf_counter()
        async with self._state:
            if self.clocks.flush_quiet(self.stays.values()):
                self._wake.set()
            batch = self.ready()
            if batch:
                taken = take(batch, self.scorers, self.clocks.complete, lane_points(self.batch_max))
                passes = submit_due(self.scorers, taken)
                self.in_lanes.update(rt.stay_id for rt in batch)
        if not batch:
            if self._uncounted:
                await self._write_uncounted()
            return 0
        try:
            await collect_due(passes, taken, self.forward_sizes)
            await self.publish_and_commit(batch, start, taken)
        finally:
            self.in_lanes.difference_update(rt.stay_id for rt in batch)
        self._batch_done.set()
        metrics.POINTS_PENDING.set(self.pending_points())
        return len(batch)

    async def batch_committed(self) -> None:
        """Wait until a lane commits its next batch."""
        self._batch_done.clear()
        await self._batch_done.wait()


LANES = 2  # scoring lanes (Pipeline.run)


def lane_points(batch_max: int) -> int:
    """A lane's share of batch_max: the most stays it takes, and the points at which a stay stops adding to
    its pass (each later stay adds its first due point, so the pass holds at most batch_max)."""
    return max(1, batch_max // LANES)
