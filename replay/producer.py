"""Publish released events to Kafka: outcomes on icu.outcomes.v1, everything else (ECGs included) on
icu.events.v2, each keyed by stay_id so one stay's events stay in order on one partition. Events of one stay
released at one time travel as one message (an observation set) unless `one_per_message`."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from medm2t.events import _Event, dump_event, set_messages
from medm2t.settings import Settings
from medm2t.topics import topic_for

log = logging.getLogger(__name__)


@dataclass
class EventProducer:
    settings: Settings
    one_per_message: bool = False                       # as a v1 producer: every event its own message
    sent: Counter = field(default_factory=Counter)      # events per kind, acknowledged by the broker
    messages: int = 0                                   # messages acknowledged
    failed: list[str] = field(default_factory=list)    # one line per message the broker refused
    failed_events: int = 0                              # the events in those messages

    def __post_init__(self):
        from medm2t.kafka import make_producer

        self._producer = make_producer(self.settings)

    def send(self, events: list[_Event]) -> None:
        """Publish the events of one stay released at one time (by_message in replay/engine.py)."""
        if self.one_per_message:
            messages = [(dump_event(e), [e]) for e in events]
        else:
            messages = set_messages(events)
        for value, members in messages:
            future = self._producer.send(topic_for(members[0].kind), key=str(members[0].stay_id).encode(), value=value)
            future.add_callback(lambda _md, m=members: self._acknowledged(m))
            future.add_errback(lambda exc, m=members: self._failed(m[0], exc, len(m)))

    def _acknowledged(self, members: list[_Event]) -> None:
        self.sent.update(e.kind for e in members)
        self.messages += 1

    def _failed(self, event: _Event, exc: BaseException, n: int = 1) -> None:
        with_it = f" and {n - 1} more events in its message" if n > 1 else ""
        if len(self.failed) < 20:
            log.error("could not publish %s event %s of stay %s%s: %s", event.kind, event.event_id, event.stay_id,
                      with_it, exc)
        self.failed.append(f"{event.kind} {event.event_id}{with_it}: {exc}")
        self.failed_events += n

    def flush(self, timeout: float | None = 60.0) -> None:
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        try:
            self._producer.flush(timeout=timeout)
        finally:
            self._producer.close(timeout=timeout)
