"""Partition clocks: when a stay's scoring point is complete (docs/scoring-contract.md).

A point T of a stay is complete once the stay's partition has delivered an event available after T (its
clock has passed T), the stay has closed at or after T, or the partition has been quiet and caught up for
`idle_s` (a quiet flush). Each partition keeps its own clock, in the order it delivers.
"""
from __future__ import annotations

import time
from datetime import datetime
from typing import Callable, Iterable, Sequence

from stream.runtime import Message, StayRuntime


class PartitionClocks:
    def __init__(self, idle_s: float, caught_up: Callable[[int], bool]):
        self.idle_s, self.caught_up = idle_s, caught_up
        self.clock: dict[int, datetime] = {}        # latest available_time delivered on the partition
        self.frontier: dict[int, datetime] = {}     # latest effective point buffered on it
        self.quiet_since: dict[int, float] = {}     # monotonic time of its last message
        self.consumed: dict[int, int] = {}          # last offset delivered (bad messages too)
        self._flushed_since: dict[int, float] = {}  # the quiet_since its last flush ran at
        self.owned: set[int] | None = None          # partitions this worker owns (None: all)

    def delivered(self, messages: Sequence[Message]) -> None:
        for msg in messages:
            if msg.offset is not None:
                self.consumed[msg.part] = max(self.consumed.get(msg.part, -1), msg.offset)

    def heard_from(self, partition: int) -> None:
        self.quiet_since[partition] = time.monotonic()

    def buffered(self, partition: int, at: datetime) -> None:
        """A point was buffered on the partition. A late event (after a close or a quiet flush) lands past
        the partition clock: only this tells the quiet flush that there is a point left to complete."""
        self.frontier[partition] = max(self.frontier.get(partition, at), at)

    def complete(self, rt: StayRuntime, at: datetime) -> bool:
        clock = self.clock.get(rt.partition)
        if clock is not None and at < clock:
            return True
        if rt.closed_at is not None and at <= rt.closed_at:
            return True
        return rt.flushed_to is not None and at <= rt.flushed_to

    def flush_quiet(self, stays: Iterable[StayRuntime]) -> bool:
        """Complete the points (and alert timers) that a partition quiet for idle_s and caught up holds: each
        stay's own, as they stand now. A stay's event that arrives later at the same time is not complete by
        this flush (its burst may have been cut by a pause), only by the clock or the next quiet flush.
        Returns whether any partition flushed."""
        now, flushed, stays = time.monotonic(), False, list(stays)
        for p, since in self.quiet_since.items():
            if now - since < self.idle_s or self._flushed_since.get(p) == since or not self.caught_up(p):
                continue
            upto = max(filter(None, (self.clock.get(p), self.frontier.get(p))), default=None)
            if upto is None:
                continue
            self._flushed_since[p] = since
            for rt in stays:
                if rt.partition == p and ((rt.buffer and min(rt.buffer) <= upto)
                                          or (rt.timer is not None and rt.timer <= upto)):
                    rt.flushed_to = upto
            flushed = True
        return flushed

    def assign(self, partitions: set[int], stored_offsets: dict[int, int]) -> None:
        """A rebalance gave this worker `partitions`: forget the others, and take the offsets another worker
        delivered before we gained ours."""
        self.owned = set(partitions)
        for p in {*self.clock, *self.frontier, *self.quiet_since, *self.consumed} - self.owned:
            for by_partition in (self.clock, self._flushed_since, self.frontier, self.quiet_since, self.consumed):
                by_partition.pop(p, None)
        for p in self.owned:
            if p in stored_offsets:
                self.consumed[p] = max(self.consumed.get(p, -1), stored_offsets[p])

    def restored(self, rt: StayRuntime, grace_s: float) -> None:
        """Pending points restored from Redis on a partition that may never deliver again (the crash came
        after its last message) complete by quiet time too, after a grace that lets the consumer learn its
        backlog first (caught_up is only meaningful once it has fetched)."""
        if rt.buffer and rt.partition not in self.clock:
            self.buffered(rt.partition, max(rt.buffer))
            self.quiet_since.setdefault(rt.partition, time.monotonic() + grace_s - self.idle_s)
