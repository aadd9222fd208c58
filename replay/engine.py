"""Replay time model: merge per-stay event lists into one stream ordered by release time, and pace it.

Events are released at their `available_time` (storetime where the source has one), never earlier; within a
stay the reader's order is kept (release times are made non-decreasing along it).

* ward mode: every stay is re-anchored onto one simulated clock. N beds start occupied with staggered
  admissions; when a stay closes its bed frees and, after a turnover gap, the next stay from the reader is
  admitted. Only the stays in beds are held in memory.
* recorded mode: original times. Stays from different patients interleave only by their own clocks, so the
  merge must see every stay's first event before releasing anything: it holds the selected stays in memory
  (narrow big sources with --stays/--limit).
"""
from __future__ import annotations

import heapq
import itertools
import random
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Iterable, Iterator

from medm2t.events import Outcome, _Event

STAGGER_MAX = timedelta(hours=2)                 # initial admissions spread over this window
TURNOVER = (timedelta(minutes=30), timedelta(hours=3))  # bed cleaning / next admission gap


@dataclass(frozen=True)
class Released:
    at: datetime     # release time on the replay clock
    event: _Event
    bed: int | None = None


def shift_event(event: _Event, delta: timedelta) -> _Event:
    """The same event moved by `delta` on every clock field (event_id is unchanged: same source row)."""
    update = {"time": event.time + delta, "available_time": event.available_time + delta}
    if isinstance(event, Outcome):
        for name in ("deathtime", "icu_intime", "icu_outtime"):
            value = getattr(event, name)
            if value is not None:
                update[name] = value + delta
    return event.model_copy(update=update)


def stay_anchor(events: list[_Event]) -> datetime:
    """Where a stay starts on its own clock: its StayOpened time (or its first event)."""
    opened = next((e for e in events if e.kind == "stay_opened"), events[0])
    return min(opened.time, opened.available_time)


def _releases(events: list[_Event]) -> Iterator[tuple[datetime, _Event]]:
    last = None
    for e in events:
        at = e.available_time if last is None else max(e.available_time, last)
        last = at
        yield at, e


def merge_recorded(stays: Iterable[list[_Event]]) -> Iterator[Released]:
    """Original clocks, all stays merged with a heap."""
    iters = [_releases(s) for s in stays if s]
    heap = []
    for n, it in enumerate(iters):
        first = next(it, None)
        if first is not None:
            heap.append((first[0], n, 0, first[1]))
    heapq.heapify(heap)
    while heap:
        at, n, i, event = heapq.heappop(heap)
        yield Released(at, event)
        nxt = next(iters[n], None)
        if nxt is not None:
            heapq.heappush(heap, (nxt[0], n, i + 1, nxt[1]))


def by_message(released: Iterable[Released]) -> Iterator[tuple[datetime, list[_Event]]]:
    """The events of each input message, in release order: consecutive releases of one stay at one time
    travel together (an observation set, medm2t.events.set_messages); outcomes travel alone, on their own
    topic. Grouping only neighbours reorders nothing, so the score stream is the one single events give."""
    at, group = None, []
    for r in released:
        e = r.event
        if group and (e.kind == "outcome" or group[0].kind == "outcome" or e.stay_id != group[0].stay_id
                      or r.at != at):
            yield at, group
            group = []
        if not group:
            at = r.at
        group.append(e)
    if group:
        yield at, group


def merge_ward(stays: Iterable[list[_Event]], beds: int, start: datetime, seed: int = 0) -> Iterator[Released]:
    """Re-anchor stays onto one ward clock starting at `start`, keeping `beds` beds occupied. Each StayOpened
    carries its bed's label ("1".."N"), which the ward board shows."""
    if beds < 1:
        raise ValueError("a ward needs at least one bed")
    rng = random.Random(seed)
    source = (s for s in stays if s)
    heap: list = []
    seq = itertools.count()
    iters: dict[int, Iterator[tuple[datetime, _Event]]] = {}

    def admit(bed: int, at: datetime) -> None:
        events = next(source, None)
        if events is None:
            return
        delta = at - stay_anchor(events)
        shifted = [shift_event(e, delta) for e in events]
        shifted = [e.model_copy(update={"bed": str(bed + 1)}) if e.kind == "stay_opened" else e for e in shifted]
        it = _releases(shifted)
        n = next(seq)
        iters[n] = it
        first = next(it)
        heapq.heappush(heap, (first[0], n, bed, first[1]))

    for bed in range(beds):
        offset = timedelta(seconds=rng.uniform(0, STAGGER_MAX.total_seconds())) if bed else timedelta(0)
        admit(bed, start + offset)
    while heap:
        at, n, bed, event = heapq.heappop(heap)
        yield Released(at, event, bed)
        nxt = next(iters[n], None)
        if nxt is not None:
            heapq.heappush(heap, (nxt[0], n, bed, nxt[1]))
        else:
            del iters[n]
        if event.kind == "stay_closed":  # the bed frees at discharge; the outcome may still follow
            gap = rng.uniform(TURNOVER[0].total_seconds(), TURNOVER[1].total_seconds())
            admit(bed, at + timedelta(seconds=gap))


class Pacer:
    """Sleeps so that replay-clock time advances `speed` times faster than wall time (speed None = max)."""

    def __init__(self, speed: float | None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        if speed is not None and speed <= 0:
            raise ValueError("speed must be positive")
        self.speed, self.sleep, self.clock = speed, sleep, clock
        self.origin: tuple[datetime, float] | None = None

    def wait_until(self, at: datetime) -> float:
        """Block until `at` is due; returns the seconds slept."""
        if self.speed is None:
            return 0.0
        if self.origin is None:
            self.origin = (at, self.clock())
            return 0.0
        due = self.origin[1] + (at - self.origin[0]).total_seconds() / self.speed
        delay = due - self.clock()
        if delay > 0:
            self.sleep(delay)
            return delay
        return 0.0


def select_stays(stays: Iterable[list[_Event]], ids: set[int] | None, limit: int | None) -> Iterator[list[_Event]]:
    """Only the stays in `ids` (if given), at most `limit` of them, lazily."""
    n = 0
    for events in stays:
        if limit is not None and n >= limit:
            return
        if not events or (ids is not None and events[0].stay_id not in ids):
            continue
        n += 1
        yield events
