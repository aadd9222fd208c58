"""What the worker holds in memory: input messages as the pipeline sees them, and one StayRuntime per stay
of the partitions it owns (its scorer states, unscored points and alert state), rebuilt from Redis."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Awaitable, Callable, Sequence

from medm2t.events import StayOpened, _Event
from stream.alerts import RuleState
from stream.scoring import Scorer
from stream.state import StoredStay

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

    @property
    def part(self) -> int:
        return -1 if self.partition is None else self.partition


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
    band: str | None = None                                    # the band at the last point (see Needs)
    n_inputs: int = 0                                          # measurements and ECGs applied
    buffer: dict[datetime, list[_Event]] = field(default_factory=lambda: defaultdict(list))  # unscored points
    timeline: dict[datetime, list[float]] = field(default_factory=dict)  # point -> its first event's stage times
    alert_state: dict[str, RuleState] = field(default_factory=dict)       # SCORER/RULE -> its alert engine state
    timer: datetime | None = None                              # the earliest alert timer due (Pipeline.set_timer)
    timed: datetime | None = None                              # the clinical time of the last timer fired
    flushed_to: datetime | None = None                         # points up to here completed by a quiet flush
    held: dict[str, list[_Event]] = field(default_factory=lambda: defaultdict(list))  # cadence scorer -> not applied

    @property
    def finished(self) -> bool:
        """Closed, with nothing left to score: the stay can leave memory."""
        return self.closed_at is not None and not self.buffer and self.scored is not None \
            and self.scored >= self.closed_at

    @property
    def flushed_point(self) -> datetime | None:
        """The stay's latest point if a quiet flush completed it: a new event of the stay at or before it goes
        a millisecond after it. Only the stay's own: a flush at T does not move another stay's event at T."""
        if self.flushed_to is None:
            return None
        latest = max(filter(None, (self.scored, max(self.buffer) if self.buffer else None)), default=None)
        return latest if latest is not None and latest <= self.flushed_to else None

    @classmethod
    def rebuild(cls, st: StoredStay, partition: int, scorers: Sequence[Scorer]) -> StayRuntime:
        """The stay as Redis holds it: scored events applied to fresh scorer states, the rest buffered.
        `partition` < 0: loaded for an action, not from a partition; its events arrive where its meta says."""
        meta = st.meta
        if partition < 0:
            partition = int(meta.get("partition") or -1)
        rt = cls(st.stay_id, int(meta.get("subject_id") or 0), partition, {s.name: s.new_state() for s in scorers})
        rt.scored = st.mark("scored")
        rt.closed_at = st.mark("closed_at")
        rt.band = meta.get("band") or None
        rt.n_inputs = int(meta.get("n_inputs") or 0)
        rt.alert_state = {k: RuleState.loads(v) for k, v in st.alert_state.items()}
        rt.last_by = {s.name: t for s in scorers if (t := st.mark(f"scored:{s.name}")) is not None}
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
        for s in scorers:
            s.apply(rt.states[s.name], done)
        return rt
