"""Pure-logic tests of stream/clocks.py: when a stay's point is complete."""
from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone

from stream.clocks import PartitionClocks
from stream.runtime import Message, StayRuntime

T0 = datetime(2150, 1, 1, tzinfo=timezone.utc)


def _stay(partition: int = 0, *points: datetime) -> StayRuntime:
    rt = StayRuntime(1, 1, partition, {})
    for at in points:
        rt.buffer[at] = []
    return rt


def test_a_point_is_complete_once_the_clock_has_passed_it_or_the_stay_closed_or_a_flush_reached_it():
    clocks = PartitionClocks(0.1, lambda p: True)
    rt = _stay(0, T0)
    assert not clocks.complete(rt, T0)               # nothing delivered yet
    clocks.clock[0] = T0
    assert not clocks.complete(rt, T0)               # an event at T0 itself may still come
    clocks.clock[0] = T0 + timedelta(seconds=1)
    assert clocks.complete(rt, T0)
    late = T0 + timedelta(hours=1)
    assert not clocks.complete(rt, late)
    rt.closed_at = late
    assert clocks.complete(rt, late) and not clocks.complete(rt, late + timedelta(seconds=1))
    rt.closed_at, rt.flushed_to = None, late
    assert clocks.complete(rt, late)


def test_offsets_delivered_only_grow_and_assignment_forgets_other_partitions():
    clocks = PartitionClocks(0.1, lambda p: True)
    clocks.delivered([Message("t", 0, 5, None, b""), Message("t", 0, 3, None, b""), Message("t", 1, 9, None, b""),
                      Message("t", None, None, None, b"")])
    assert clocks.consumed == {0: 5, 1: 9}
    clocks.clock[1], clocks.frontier[1] = T0, T0
    clocks.heard_from(1)
    clocks.assign({0, 2}, {0: 2, 2: 7})
    assert clocks.consumed == {0: 5, 2: 7} and 1 not in clocks.clock and 1 not in clocks.frontier
    assert clocks.owned == {0, 2} and 1 not in clocks.quiet_since


def test_a_quiet_caught_up_partition_completes_its_stays_points_once_per_quiet_spell():
    caught = {0: True, 1: False}
    clocks = PartitionClocks(0.0, lambda p: caught[p])
    a, b, other = _stay(0, T0), _stay(0), _stay(1, T0)
    clocks.clock[0] = clocks.clock[1] = T0
    clocks.heard_from(0)
    clocks.heard_from(1)
    time.sleep(0.01)
    assert clocks.flush_quiet([a, b, other])
    assert a.flushed_to == T0 and b.flushed_to is None       # b has nothing to complete
    assert other.flushed_to is None                          # its partition is not caught up
    assert not clocks.flush_quiet([a, b, other])             # the same quiet spell flushes once
    late = T0 + timedelta(minutes=5)                         # a late event past the clock, after a close
    a.buffer[late] = []
    clocks.buffered(0, late)
    clocks.heard_from(0)
    time.sleep(0.01)
    assert clocks.flush_quiet([a]) and a.flushed_to == late


def test_a_partition_still_busy_does_not_flush():
    clocks = PartitionClocks(60.0, lambda p: True)
    rt = _stay(0, T0)
    clocks.clock[0] = T0
    clocks.heard_from(0)
    assert not clocks.flush_quiet([rt]) and rt.flushed_to is None


def test_points_restored_from_redis_complete_by_quiet_time_after_a_grace():
    clocks = PartitionClocks(0.1, lambda p: True)
    rt = _stay(3, T0, T0 + timedelta(minutes=1))
    before = time.monotonic()
    clocks.restored(rt, 5.0)
    assert clocks.frontier[3] == T0 + timedelta(minutes=1)
    assert clocks.quiet_since[3] >= before + 5.0 - 0.1        # quiet only once the grace has passed
    clocks.clock[4] = T0
    restored_elsewhere = _stay(4, T0)
    clocks.restored(restored_elsewhere, 5.0)                 # its partition delivers: its clock completes it
    assert 4 not in clocks.quiet_since
