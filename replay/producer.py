"""Publish released events to Kafka: outcomes on icu.outcomes.v1, everything else (ECGs included) on
icu.events.v1, each keyed by stay_id so one stay's events stay in order on one partition."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from medm2t.events import _Event, dump_event
from medm2t.settings import Settings
from medm2t.topics import topic_for

log = logging.getLogger(__name__)


@dataclass
class EventProducer:
    settings: Settings
    sent: Counter = field(default_factory=Counter)      # per event kind, acknowledged by the broker
    failed: list[str] = field(default_factory=list)

    def __post_init__(self):
        from stream.kafka import make_producer

        self._producer = make_producer(self.settings)

    def send(self, event: _Event) -> None:
        kind = event.kind
        future = self._producer.send(topic_for(kind), key=str(event.stay_id).encode(), value=dump_event(event))
        future.add_callback(lambda _md: self.sent.update((kind,)))
        future.add_errback(lambda exc: self._failed(event, exc))

    def _failed(self, event: _Event, exc: BaseException) -> None:
        if len(self.failed) < 20:
            log.error("could not publish %s event %s of stay %s: %s", event.kind, event.event_id, event.stay_id, exc)
        self.failed.append(f"{event.kind} {event.event_id}: {exc}")

    def flush(self, timeout: float | None = 60.0) -> None:
        self._producer.flush(timeout=timeout)

    def close(self, timeout: float = 30.0) -> None:
        try:
            self._producer.flush(timeout=timeout)
        finally:
            self._producer.close(timeout=timeout)
