"""Ingest, the first part of the Pipeline (stream/pipeline.py): one call per Kafka chunk validates its
messages, dead-letters what is bad, APPLYs each stay's events in Redis (durable, idempotent; one round trip
per chunk) and buffers the new events in memory under their effective point (docs/scoring-contract.md).

A mixin of Pipeline: it uses the pipeline's store, stays, clocks, state lock, counters and dead letters.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import defaultdict
from datetime import datetime, timedelta
from typing import Sequence

from medm2t.events import StayClosed, StayOpened, _Event
from stream import metrics
from stream.runtime import Message, StayRuntime
from stream.state import Incoming, epoch, from_epoch
from stream.validation import InvalidMessage, validate_message

log = logging.getLogger("medm2t.worker")
LATE_STEP = timedelta(milliseconds=1)  # a point after one already complete
NEVER = float("-inf")
INGEST_CHUNK = 2000  # messages per ingest call: one Redis round trip, one Lua call per stay


class Ingest:
    async def ingest(self, messages: Sequence[Message]) -> None:
        by_stay: dict[int, list[tuple[Message, Incoming]]] = defaultdict(list)
        arrival: list[tuple[Message, Incoming]] = []
        self.clocks.delivered(messages)  # before any await: caught_up() may be asked in between
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
        # clocks reach self.clocks only once its events are buffered: the publish path fires alert timers
        # outside the state lock, while this chunk's APPLY is in flight (seconds, if Redis is down), and a
        # clock ahead of the buffers would fire a stay's timer before its own point in this very chunk.
        clock: dict[int, datetime] = {}
        for msg, item in arrival:
            p = msg.part
            rt = self.stays[item.event.stay_id]
            rt.subject_id = rt.subject_id or item.event.subject_id  # a stay new to Redis has no meta yet
            now = clock.get(p, self.clocks.clock.get(p))
            floor = NEVER if now is None else epoch(now)
            done = max(filter(None, (rt.closed_at, rt.flushed_point)), default=None)
            if done is not None:
                floor = max(floor, epoch(done + LATE_STEP))
            item.floor = floor
            clock[p] = item.event.available_time if now is None else max(now, item.event.available_time)
            self.clocks.heard_from(p)
        order = list(by_stay)
        # A close that is a duplicate or a conflict was applied before, so the stay is closed either way.
        active = {sid: self.stays[sid].closed_at is not None or any(isinstance(i.event, StayClosed) for _, i in items)
                  for sid, items in by_stay.items()}
        consumed = self.clocks.consumed
        offsets = {p: consumed[p] for p in {m.part for m, _ in arrival} if p in consumed}
        uncounted = self._take_uncounted()

        async def apply():
            pipe = self.store.r.pipeline(transaction=False)
            for sid in order:
                items = by_stay[sid]
                self.store.apply(pipe, sid, items[0][1].event.subject_id, items[0][0].part, [i for _, i in items])
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
        self.clocks.clock.update(clock)
        for name, n in counts.items():
            self.stats[name] += n
            metrics.count(name, n)
        self._uncounted["events_in"] += counts["events"]  # the name the dashboard's counters use
        self._uncounted["duplicates"] += counts["duplicates"]

    @staticmethod
    def _lost_reply(rt: StayRuntime, at: datetime, event: _Event) -> bool:
        """A duplicate that this worker never buffered although its point is still unscored: an APPLY whose
        reply was lost (Redis went away after running it, and the call was retried). It is ours to score.
        A real redelivery is already in the buffer, or at or before the scored mark."""
        if rt.scored is not None and at <= rt.scored:
            return False
        return not any(e.event_id == event.event_id for e in rt.buffer.get(at, ()))

    def _buffer(self, rt: StayRuntime, at: datetime, event: _Event, msg: Message) -> None:
        rt.buffer[at].append(event)
        self.clocks.buffered(rt.partition, at)
        if msg.timestamp_ms is not None and at not in rt.timeline:
            sent = msg.timestamp_ms / 1000.0
            rt.timeline[at] = [sent, msg.received_s or sent, time.time()]
        if isinstance(event, StayOpened):
            rt.opened = event
        elif isinstance(event, StayClosed):
            rt.closed_at = at
            self.set_timer(rt)
