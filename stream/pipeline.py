"""The worker's transport-independent core: ingest validated events into per-stay state, find the scoring
points that are complete, score them in batches and publish. docs/scoring-contract.md states the contract
this code keeps; the names below follow it.

* Ingest (one call per Kafka chunk): validate, dead-letter what is bad, APPLY each stay's events in Redis
  (durable, idempotent), and buffer the new events in memory under their effective point.
* Completion: a stay's point T is complete once its partition has delivered an event available after T,
  the stay has closed at or after T, or the partition has been quiet and caught up for `idle_ms`.
* Scoring (its own task): complete points in point order. Every-point scorers (NEWS2) score each point;
  cadence scorers (MedM2T) score the points their cadence, a NEWS2 band change or the stay's close calls
  for, many stays in one forward pass off the event loop. Outputs are published, then COMMITted to Redis,
  so a crash in between only republishes the same scores under the same ids.

Scorer state lives in this process for the stays of the partitions it owns; it is rebuilt from Redis on
start-up, on rebalance and for a stay it has not seen.
"""
from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Awaitable, Callable, Sequence

from medm2t import topics
from medm2t.fhir import risk_assessment_json
from medm2t.events import (
    Alert, AlertAction, DeadLetter, Ecg, Measurement, RiskScore, StayClosed, StayOpened, _Event, make_event_id,
)
from stream import metrics
from stream.alerts import ActionRejected, AlertRules, RuleState, act, advance, next_timer, run_timers
from stream.policy import DEFAULT_POLICY, AlertPolicy
from stream.scoring import Scorer, StayPoint, canonical_order
from stream.state import Incoming, StayStore, StoredStay, epoch, from_epoch
from stream.validation import InvalidMessage, validate_message

log = logging.getLogger("medm2t.worker")
LATE_STEP = timedelta(milliseconds=1)  # a point after one already complete
NEVER = float("-inf")
RESTORE_GRACE_S = 5.0
INGEST_CHUNK = 2000  # messages per ingest call: one Redis round trip, one Lua call per stay

Send = Callable[[str, bytes | None, bytes], Awaitable[Any]]   # (topic, key, value) -> awaitable delivery


@dataclass
class Message:
    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    timestamp_ms: float | None = None    # Kafka timestamp (the producer's send time)
    received_s: float | None = None      # wall time the consumer handed it to us


@dataclass
class StayRuntime:
    stay_id: int
    subject_id: int
    partition: int
    states: dict[str, Any]
    opened: StayOpened | None = None
    closed_at: datetime | None = None
    scored: datetime | None = None                             # the last point scored
    last_by: dict[str, datetime] = field(default_factory=dict)  # per cadence scorer: the last point it scored
    band: str | None = None                                    # NEWS2 band at the last point
    n_inputs: int = 0                                          # measurements and ECGs applied
    buffer: dict[datetime, list[_Event]] = field(default_factory=lambda: defaultdict(list))  # unscored points
    timeline: dict[datetime, list[float]] = field(default_factory=dict)  # point -> its first event's stage times
    alert_state: dict[str, RuleState] = field(default_factory=dict)       # SCORER/RULE -> its alert engine state
    timer: datetime | None = None                              # the earliest alert timer due (see _set_timer)
    timed: datetime | None = None                              # the clinical time of the last timer fired
    flushed_to: datetime | None = None                         # points up to here completed by a quiet flush
    held: dict[str, list[_Event]] = field(default_factory=lambda: defaultdict(list))  # cadence scorer -> not applied


class Pipeline:
    def __init__(self, store: StayStore, scorers: Sequence[Scorer], send: Send, batch_max: int = 256,
                 idle_ms: int = 100, caught_up: Callable[[int], bool] = lambda p: True,
                 policy: AlertPolicy = DEFAULT_POLICY):
        self.store, self.scorers, self.send = store, list(scorers), send
        self.rules = AlertRules(policy)  # the pipeline runs the alert policy; StayStore only stores
        self.batch_max, self.idle_s, self.caught_up = batch_max, idle_ms / 1000.0, caught_up
        self.stays: dict[int, StayRuntime] = {}
        self.clock: dict[int, datetime] = {}        # partition -> latest available_time delivered on it
        self._flushed_since: dict[int, float] = {}  # partition -> the quiet_since its last flush ran at
        self.frontier: dict[int, datetime] = {}     # partition -> latest effective point buffered on it
        self.quiet_since: dict[int, float] = {}     # partition -> monotonic time of its last message
        self.consumed: dict[int, int] = {}          # partition -> last offset delivered (bad messages too)
        self.owned: set[int] | None = None          # partitions this worker owns (None: all)
        self.stats: dict[str, int] = defaultdict(int)
        self.forward_sizes: dict[str, Counter] = defaultdict(Counter)  # cadence scorer -> {points per pass: passes}
        self._uncounted: dict[str, int] = defaultdict(int)  # Redis counters not yet written: they ride along
                                                             # with the next round trip (or the next idle tick)
        self._actions: list[tuple[Message, AlertAction]] = []  # valid actions, applied by the scoring loop
        self._wake = asyncio.Event()
        self._state = asyncio.Lock()    # held while clocks, buffers or the set of stays change

    # ---- ingest ----------------------------------------------------------------------------------------

    async def ingest(self, messages: Sequence[Message]) -> None:
        by_stay: dict[int, list[tuple[Message, Incoming]]] = defaultdict(list)
        arrival: list[tuple[Message, Incoming]] = []
        for msg in messages:  # before any await: caught_up() may be asked in between
            if msg.offset is not None:
                self.consumed[_part(msg)] = max(self.consumed.get(_part(msg), -1), msg.offset)
        for msg in messages:
            try:
                events, rejected = validate_message(msg.value, msg.key, msg.topic)
            except InvalidMessage as exc:
                await self.dead_letter(msg, str(exc))
                continue
            except Exception as exc:  # noqa: BLE001 - a reader's own bug must not stop the partition
                log.exception("could not read message topic=%s partition=%s offset=%s", msg.topic, msg.partition,
                              msg.offset)
                await self.dead_letter(msg, f"unreadable message ({type(exc).__name__})")
                continue
            if rejected:  # a set's bad members, each alone: their siblings go on
                await self.dead_letters(msg, rejected)
            for event, raw in events:
                item = (msg, Incoming(event, raw, hashlib.blake2b(raw, digest_size=12).hexdigest(), NEVER))
                by_stay[event.stay_id].append(item)
                arrival.append(item)
        if not by_stay:
            return
        async with self._state:  # the scoring loop sees a chunk's clocks only together with its events
            await self._ingest_valid(by_stay, arrival)
        self._wake.set()

    async def _ingest_valid(self, by_stay: dict[int, list[tuple[Message, Incoming]]],
                            arrival: list[tuple[Message, Incoming]]) -> None:
        await self._ensure_loaded([(sid, items[0][0].partition) for sid, items in by_stay.items()])
        # Floors follow each partition's own order, message by message (not chunk by chunk). The chunk's
        # clocks reach self.clock only once its events are buffered: the publish path fires alert timers
        # outside the state lock, while this chunk's APPLY is in flight (seconds, if Redis is down), and a
        # clock ahead of the buffers would fire a stay's timer before its own point in this very chunk.
        clock: dict[int, datetime] = {}
        for msg, item in arrival:
            p = _part(msg)
            rt = self.stays[item.event.stay_id]
            rt.subject_id = rt.subject_id or item.event.subject_id  # a stay new to Redis has no meta yet
            now = clock.get(p, self.clock.get(p))
            floor = NEVER if now is None else epoch(now)
            done = max(filter(None, (rt.closed_at, self._flushed_point(rt))), default=None)
            if done is not None:
                floor = max(floor, epoch(done + LATE_STEP))
            item.floor = floor
            clock[p] = item.event.available_time if now is None else max(now, item.event.available_time)
            self.quiet_since[p] = time.monotonic()
        order = list(by_stay)
        # A close that is a duplicate or a conflict was applied before, so the stay is closed either way.
        active = {sid: self.stays[sid].closed_at is not None or any(isinstance(i.event, StayClosed) for _, i in items)
                  for sid, items in by_stay.items()}
        offsets = {p: self.consumed[p] for p in {_part(m) for m, _ in arrival} if p in self.consumed}
        uncounted = self._take_uncounted()

        async def apply():
            pipe = self.store.r.pipeline(transaction=False)
            for sid in order:
                items = by_stay[sid]
                self.store.apply(pipe, sid, items[0][1].event.subject_id, _part(items[0][0]), [i for _, i in items])
            self.store.note_chunk(pipe, active, uncounted, offsets)
            return (await pipe.execute())[:len(order)]

        replies = await self.with_redis("ingest", apply)
        counts = {"events": 0, "duplicates": 0}
        for sid, reply in zip(order, replies):
            rt = self.stays[sid]
            for (msg, item), status in zip(by_stay[sid], reply):
                status = status.decode() if isinstance(status, bytes) else status
                if status == "-1":
                    await self.dead_letter(msg, f"conflict: event_id already applied with other content ({item.event.kind})")
                    continue
                if status == "0" or status.startswith("="):
                    at = from_epoch(status[1:]) if status != "0" else None
                    if at is None or not self._lost_reply(rt, at, item.event):
                        counts["duplicates"] += 1
                        continue
                    status = status[1:]
                self._buffer(rt, from_epoch(status), item.event, msg)
                counts["events"] += 1
        self.clock.update(clock)
        for name, n in counts.items():
            self.stats[name] += n
            metrics.count(name, n)
        self._uncounted["events_in"] += counts["events"]  # the name the dashboard's counters use
        self._uncounted["duplicates"] += counts["duplicates"]

    def _flushed_point(self, rt: StayRuntime) -> datetime | None:
        """The stay's latest point if a quiet flush completed it: a new event of the stay at or before it goes
        a millisecond after it. Only the stay's own: a flush at T does not move another stay's event at T."""
        if rt.flushed_to is None:
            return None
        latest = max(filter(None, (rt.scored, max(rt.buffer) if rt.buffer else None)), default=None)
        return latest if latest is not None and latest <= rt.flushed_to else None

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

    @staticmethod
    def _lost_reply(rt: StayRuntime, at: datetime, event: _Event) -> bool:
        """A duplicate that this worker never buffered although its point is still unscored: an APPLY whose
        reply was lost (Redis went away after running it, and the call was retried). It is ours to score.
        A real redelivery is already in the buffer, or at or before the scored mark."""
        if rt.scored is not None and at <= rt.scored:
            return False
        return not any(e.event_id == event.event_id for e in rt.buffer.get(at, ()))

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

    def _buffer(self, rt: StayRuntime, at: datetime, event: _Event, msg: Message) -> None:
        rt.buffer[at].append(event)
        # A late event (after a close or a quiet flush) lands past the partition clock: only this tells
        # the quiet flush that there is a point left to complete.
        self.frontier[rt.partition] = max(self.frontier.get(rt.partition, at), at)
        if msg.timestamp_ms is not None and at not in rt.timeline:
            sent = msg.timestamp_ms / 1000.0
            rt.timeline[at] = [sent, msg.received_s or sent, time.time()]
        if isinstance(event, StayOpened):
            rt.opened = event
        elif isinstance(event, StayClosed):
            rt.closed_at = at
            self._set_timer(rt)

    async def _send_alert(self, key: bytes, alert: Alert, raw: str) -> list:
        """Send one alert record on its topic, and as v1 on the deprecated topic (docs/schemas.md)."""
        return [await self.send(topics.ALERTS, key, raw.encode()),
                await self.send(topics.ALERTS_V1, key, alert.as_v1().model_dump_json().encode())]

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

    # ---- people acting on alerts ------------------------------------------------------------------------

    async def act_on(self, messages: Sequence[Message]) -> None:
        """Queue valid AlertActions for the scoring loop (the one writer of alert state); dead-letter the rest."""
        from pydantic import ValidationError

        for msg in messages:
            try:
                action = AlertAction.model_validate_json(msg.value or b"")
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(x) for x in first["loc"]) or "message"
                await self.dead_letter(msg, f"invalid alert action: {where}: {first['msg']}")
                continue
            self._actions.append((msg, action))
        self._wake.set()

    async def apply_actions(self) -> int:
        """Apply the queued actions in arrival order: each is one record on the alert topics and in the stay's
        audit trail, published before it is stored (like scores). Returns how many were applied."""
        if not self._actions:
            return 0
        queued, self._actions = self._actions, []
        by_stay: dict[int, tuple[dict[str, str], list[tuple[str, str]], dict[str, str]]] = {}
        deliveries = []
        async with self._state:  # an ingest must not load a stay from Redis half-way through
            for msg, action in queued:
                done, raw = await self.with_redis("action lookup", lambda: self.store.acted_on(
                    action.stay_id, action.action_id, action.alert_id))
                states, records, applied = by_stay.get(action.stay_id, ({}, [], {}))
                if done or action.action_id in applied:  # redelivered: applied once only
                    self.stats["duplicate_actions"] += 1
                    continue
                if raw is None:
                    await self.dead_letter(msg, f"unknown alert {action.alert_id} for stay {action.stay_id}")
                    continue
                acted_on = Alert.read(raw)
                await self._ensure_loaded([(action.stay_id, None)])
                rt = self.stays[action.stay_id]
                rule_key = f"{acted_on.scorer}/{acted_on.task}"
                now = max(filter(None, (rt.scored, rt.timed)), default=acted_on.at)
                try:
                    new, record = act(rt.alert_state.get(rule_key) or RuleState(), action, acted_on, now,
                                      self.rules.policy)
                except ActionRejected as exc:
                    await self.dead_letter(msg, str(exc))
                    continue
                states, records, applied = by_stay.setdefault(action.stay_id, ({}, [], {}))
                rt.alert_state[rule_key] = new
                states[rule_key] = new.dumps()
                self._set_timer(rt)
                records.append((record.alert_id, record.model_dump_json()))
                applied[action.action_id] = action.alert_id
                deliveries += await self._send_alert(str(action.stay_id).encode(), record, records[-1][1])
            await asyncio.gather(*deliveries)
            feed = [(sid, alert_id, raw) for sid, (_, records, _) in by_stay.items() for alert_id, raw in records]

            async def write():
                pipe = self.store.r.pipeline(transaction=False)
                for sid, (states, records, applied) in by_stay.items():
                    self.store.record(pipe, sid, states, records, applied, self.stays[sid].timer)
                self.store.note_batch(pipe, feed, {"actions": len(feed)})
                return await pipe.execute()

            if by_stay:
                await self.with_redis("record actions", write)
            for sid in by_stay:  # a closed stay loaded only for its actions leaves memory again
                self._forget_if_finished(sid)
        self.stats["actions"] += len(feed)
        return len(feed)

    # ---- state from Redis ------------------------------------------------------------------------------

    async def _ensure_loaded(self, stays: Sequence[tuple[int, int | None]]) -> None:
        missing = [(sid, p) for sid, p in stays if sid not in self.stays]
        if not missing:
            return
        stored = await self.with_redis("state load", lambda: self.store.load([sid for sid, _ in missing]))
        for (sid, p), st in zip(missing, stored):
            self.stays[sid] = self._rebuild(st, -1 if p is None else p)

    def _rebuild(self, st: StoredStay, partition: int) -> StayRuntime:
        meta = st.meta
        if partition < 0:  # loaded for an action, not from a partition: where its events arrive
            partition = int(meta.get("partition") or -1)
        rt = StayRuntime(st.stay_id, int(meta.get("subject_id") or 0), partition,
                         {s.name: s.new_state() for s in self.scorers})
        rt.scored = st.mark("scored")
        rt.closed_at = st.mark("closed_at")
        rt.band = meta.get("band") or None
        rt.n_inputs = int(meta.get("n_inputs") or 0)
        rt.alert_state = {k: RuleState.loads(v) for k, v in st.alert_state.items()}
        self._set_timer(rt)
        rt.last_by = {s.name: t for s in self.scorers if (t := st.mark(f"scored:{s.name}")) is not None}
        done = []
        for at, e in sorted(st.events, key=lambda x: (x[0], x[1].available_time, x[1].time, x[1].event_id)):
            if isinstance(e, StayOpened):
                rt.opened = e
            if rt.scored is not None and at <= rt.scored:
                done.append(e)
            else:
                rt.buffer[at].append(e)
        if rt.closed_at is not None and (rt.scored is None or rt.closed_at > rt.scored):
            rt.buffer.setdefault(rt.closed_at, [])  # the close is a point of its own
        for s in self.scorers:
            s.apply(rt.states[s.name], done)
        return rt

    async def assign(self, partitions: set[int]) -> None:
        """A rebalance gave this worker `partitions`: forget the others' stays, rebuild our pending ones."""
        async with self._state:
            await self._assign(partitions)
        self._wake.set()

    async def _assign(self, partitions: set[int]) -> None:
        self.owned = set(partitions)
        for sid in [sid for sid, rt in self.stays.items() if rt.partition not in self.owned]:
            del self.stays[sid]
        for p in {*self.clock, *self.frontier, *self.quiet_since, *self.consumed} - self.owned:
            for by_partition in (self.clock, self._flushed_since, self.frontier, self.quiet_since, self.consumed):
                by_partition.pop(p, None)
        stored = await self.with_redis("input offsets", self.store.input_offsets)
        for p in self.owned:  # what another worker delivered before we gained the partition
            if p in stored:
                self.consumed[p] = max(self.consumed.get(p, -1), stored[p])
        pending = await self.with_redis("pending scan", self.store.pending_stays)
        await self._ensure_loaded([(sid, p) for sid, p in pending.items() if p in self.owned])
        # Pending points restored from Redis on a partition that may never deliver again (the crash came
        # after its last message) complete by quiet time too, after a grace that lets the consumer learn
        # its backlog first (caught_up is only meaningful once it has fetched).
        restart = time.monotonic() + RESTORE_GRACE_S - self.idle_s
        for rt in self.stays.values():
            if rt.buffer and rt.partition not in self.clock:
                self.frontier[rt.partition] = max(self.frontier.get(rt.partition, max(rt.buffer)), max(rt.buffer))
                self.quiet_since.setdefault(rt.partition, restart)
        log.info("assigned partitions %s: %d stays with pending points", sorted(self.owned),
                 sum(1 for p in pending.values() if p in self.owned))

    # ---- completion and scoring ------------------------------------------------------------------------

    def _complete(self, rt: StayRuntime, at: datetime) -> bool:
        clock = self.clock.get(rt.partition)
        if clock is not None and at < clock:
            return True
        if rt.closed_at is not None and at <= rt.closed_at:
            return True
        return rt.flushed_to is not None and at <= rt.flushed_to

    def flush_quiet(self) -> None:
        """Complete the points (and alert timers) that a partition quiet for idle_ms and caught up holds: each
        stay's own, as they stand now. A stay's event that arrives later at the same time is not complete by
        this flush (its burst may have been cut by a pause), only by the clock or the next quiet flush."""
        now = time.monotonic()
        for p, since in self.quiet_since.items():
            if now - since < self.idle_s or self._flushed_since.get(p) == since or not self.caught_up(p):
                continue
            upto = max(filter(None, (self.clock.get(p), self.frontier.get(p))), default=None)
            if upto is None:
                continue
            self._flushed_since[p] = since
            for rt in self.stays.values():
                if rt.partition == p and ((rt.buffer and min(rt.buffer) <= upto)
                                          or (rt.timer is not None and rt.timer <= upto)):
                    rt.flushed_to = upto
            self._wake.set()

    def _set_timer(self, rt: StayRuntime) -> None:
        """The stay's earliest alert timer (escalation, snooze end). Timers after the stay's close never fire."""
        due = [t for key, st in rt.alert_state.items()
               if (t := next_timer(self.rules.by_key(key), st, self.rules.policy)) is not None
               and (rt.closed_at is None or t <= rt.closed_at)]
        rt.timer = min(due, default=None)

    def ready(self) -> list[StayRuntime]:
        """Stays whose first unscored point is complete, or whose alert timer is: complete like a point, with
        no unscored point before it."""
        out = []
        for rt in self.stays.values():
            first = min(rt.buffer) if rt.buffer else None
            point_due = first is not None and self._complete(rt, first)
            timer_due = rt.timer is not None and (first is None or rt.timer < first) and self._complete(rt, rt.timer)
            if point_due or timer_due:
                out.append(rt)
                if len(out) >= self.batch_max:
                    break
        return out

    def pending_points(self) -> int:
        return sum(len(rt.buffer) for rt in self.stays.values())

    async def run(self, tick_s: float = 0.02) -> None:
        """The scoring loop: score whatever is complete, at once; wait when nothing is."""
        while True:
            acted = await self.apply_actions()
            if not await self.score_ready() and not acted:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=tick_s)
                except asyncio.TimeoutError:
                    pass

    async def score_ready(self) -> int:
        """Score one batch of stays with complete points. Returns how many stays it scored."""
        start = time.perf_counter()
        async with self._state:
            self.flush_quiet()
            batch = self.ready()
            if batch:
                taken = self._take(batch)
        if not batch:
            if self._uncounted:
                await self._write_uncounted()
            return 0
        await self._score_taken(batch, start, *taken)
        metrics.POINTS_PENDING.set(self.pending_points())
        return len(batch)

    def _take(self, batch: list[StayRuntime]):
        """Apply each stay's complete points in order and score the every-point scorers. A cadence scorer's
        due points are queued, each with the events held for it since the previous one, to be scored
        together off the event loop; a stay stops once a cadence scorer has `batch_max` points queued (a
        dynamic batch: as much as is due, up to its size). Synchronous: it runs under the state lock."""
        every = [s for s in self.scorers if s.needs.cadence is None]
        cadenced = [s for s in self.scorers if s.needs.cadence is not None]
        per_stay: dict[int, dict[str, list[RiskScore]]] = {}
        due: dict[str, list[tuple[StayRuntime, list[_Event], StayPoint]]] = defaultdict(list)
        timelines: list[list[float]] = []
        last_point: dict[int, datetime] = {}
        for rt in batch:
            out = per_stay[rt.stay_id] = {s.name: [] for s in self.scorers}
            for at in sorted(rt.buffer):
                if not self._complete(rt, at):
                    break
                events = canonical_order(rt.buffer.pop(at))
                if at in rt.timeline:
                    timelines.append(rt.timeline.pop(at) + [time.time()])
                rt.n_inputs += sum(isinstance(e, (Measurement, Ecg)) for e in events)
                for s in every:
                    s.apply(rt.states[s.name], events)
                for s in cadenced:  # applied when the scorer is next due (off the event loop)
                    rt.held[s.name] += events
                point = StayPoint(rt.stay_id, rt.subject_id, at, rt.opened, rt.n_inputs)
                band_changed = False
                for s in every:
                    score, = s.score([(rt.states[s.name], point)])
                    out[s.name].append(score)
                    band = score.tasks[s.name].band if s.name in score.tasks else None
                    if s.name == "news2":
                        band_changed, rt.band = band != rt.band and rt.scored is not None, band
                last_point[rt.stay_id] = rt.scored = at
                full = False
                for s in cadenced:
                    if self._due(rt, s, at, band_changed):
                        due[s.name].append((rt, rt.held.pop(s.name, []), point))
                        rt.last_by[s.name] = at
                        full = full or len(due[s.name]) >= self.batch_max
                if full:
                    break
        return per_stay, due, last_point, timelines

    async def _score_taken(self, batch, start, per_stay, due, last_point, timelines) -> None:
        loop = asyncio.get_running_loop()
        for s in self.scorers:
            items = due.get(s.name)
            if not items:
                continue
            work = [(rt.states[s.name], events, p) for rt, events, p in items]
            scores = await loop.run_in_executor(None, _apply_and_score, s, work)
            self.forward_sizes[s.name][len(work)] += 1
            metrics.observe_forward(s.name, len(work))
            for (rt, _, _), score in zip(items, scores):
                per_stay[rt.stay_id][s.name].append(score)
        await self._publish_and_commit(batch, start, per_stay, last_point, timelines)

    def _due(self, rt: StayRuntime, scorer: Scorer, at: datetime, band_changed: bool) -> bool:
        last = rt.last_by.get(scorer.name)
        if last is None or band_changed or (rt.closed_at is not None and at >= rt.closed_at):
            return True
        step_s = scorer.needs.cadence.total_seconds()
        return epoch(at) // step_s > epoch(last) // step_s

    def _forget_if_finished(self, stay_id: int) -> None:
        """A closed stay with nothing left to score leaves memory."""
        rt = self.stays.get(stay_id)
        if rt is not None and rt.closed_at is not None and not rt.buffer and rt.scored is not None \
                and rt.scored >= rt.closed_at:
            del self.stays[stay_id]

    def _fire_timers(self, rt: StayRuntime, changed: set[str]) -> list[Alert]:
        """Fire the stay's alert timers whose clinical time has passed with no score after them: complete,
        before its next unscored point, and not after its close. Returns their records."""
        horizon = min(rt.buffer) if rt.buffer else None

        def passed(due: datetime) -> bool:
            return ((horizon is None or due < horizon) and self._complete(rt, due)
                    and (rt.closed_at is None or due <= rt.closed_at))

        out = []
        for rule_key, state in list(rt.alert_state.items()):
            new, records = run_timers(self.rules.by_key(rule_key), state, rt.stay_id, rt.subject_id, passed,
                                      self.rules.policy)
            if records:
                rt.alert_state[rule_key] = new
                changed.add(rule_key)
                rt.timed = max(filter(None, (rt.timed, records[-1].at)))
                out += records
        self._set_timer(rt)
        return out

    async def _publish_and_commit(self, batch, start, per_stay, last_point, timelines) -> None:
        """Publish the batch's scores and alerts, wait until they are delivered, then COMMIT each stay and the
        batch's bookkeeping in one Redis round trip."""
        deliveries, feed, commits = [], [], []
        n_scores = n_alerts = 0
        for rt in batch:
            records: list[Alert] = []
            changed: set[str] = set()
            scores_by: dict[str, list[tuple[datetime, str]]] = {}
            key = str(rt.stay_id).encode()
            for name, scores in per_stay[rt.stay_id].items():
                raws = scores_by[name] = []
                for score in scores:
                    score.score_id = make_event_id("score", score.stay_id, score.scorer, score.model_version,
                                                   score.scored_at.isoformat())
                    raw = score.model_dump_json()
                    raws.append((score.scored_at, raw))
                    deliveries.append(await self.send(topics.SCORES, key, raw.encode()))
                    fhir = risk_assessment_json(score)
                    if fhir is not None:
                        deliveries.append(await self.send(topics.FHIR_RISK, key, fhir))
                    for rule in self.rules.for_score(score):
                        rule_key = f"{score.scorer}/{rule.key}"
                        new, made = advance(rule, rt.alert_state.get(rule_key) or RuleState(), score,
                                            self.rules.policy)
                        rt.alert_state[rule_key] = new
                        changed.add(rule_key)
                        records += made
                n_scores += len(scores)
            records += self._fire_timers(rt, changed)
            states = {k: rt.alert_state[k].dumps() for k in changed}  # once per rule and batch
            alerts = [(a.alert_id, a.model_dump_json()) for a in records]
            for a, (_, raw) in zip(records, alerts):
                deliveries += await self._send_alert(key, a, raw)
            n_alerts += len(alerts)
            feed += [(rt.stay_id, alert_id, a) for alert_id, a in alerts]
            commits.append((rt, scores_by, states, alerts))
        await asyncio.gather(*deliveries)   # published before committed: a crash here only republishes
        published = time.time()
        for timeline in timelines:
            metrics.observe_point(timeline + [published])
        seconds = time.perf_counter() - start
        counts = {"scores": n_scores, "alerts": n_alerts, "batches": 1}
        bookkeeping = dict(counts)
        for name, n in self._take_uncounted().items():
            bookkeeping[name] = bookkeeping.get(name, 0) + n

        async def commit():
            pipe = self.store.r.pipeline(transaction=False)
            for rt, scores_by, states, alerts in commits:
                self.store.commit(pipe, rt.stay_id, last_point.get(rt.stay_id, rt.scored), rt.n_inputs, rt.band,
                                  scores_by, states, alerts, rt.timer)
            self.store.note_batch(pipe, feed, bookkeeping, seconds * 1000.0)
            return await pipe.execute()

        await self.with_redis("commit", commit)
        async with self._state:
            for rt, *_ in commits:
                self._forget_if_finished(rt.stay_id)
        for name, n in counts.items():
            self.stats[name] += n
        metrics.count("scores", n_scores)
        metrics.count("alerts", n_alerts)
        metrics.observe_batch(len(batch), seconds)


def _apply_and_score(scorer: Scorer, work: list[tuple[Any, list[_Event], StayPoint]]) -> list[RiskScore]:
    """Apply each due point's held events to its stay's state and score all the points in one pass. A stay
    with several points in `work` is scored at each from a snapshot of its state as of that point."""
    last = {id(state): i for i, (state, _, _) in enumerate(work)}
    items = []
    for i, (state, events, point) in enumerate(work):
        if events:
            scorer.apply(state, events)
        items.append((state if last[id(state)] == i else scorer.snapshot(state), point))
    return scorer.score(items)


def _part(msg: Message) -> int:
    return -1 if msg.partition is None else msg.partition
