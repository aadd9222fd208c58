"""The scoring worker: a Faust app that consumes icu.events.v1 and icu.ecg.v1, keeps per-stay state in
Redis, scores changed stays in micro-batches and publishes scores, alerts and dead letters.

Delivery is at-least-once (Faust's exactly_once is deliberately not used); every Redis write is idempotent
by event_id (stream/state.py), so a redelivered message changes no state. Several workers with the same
app id split the partitions between them; the Faust web server is disabled, so they never clash on a port.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Awaitable, Callable, Sequence

from pydantic import ValidationError

from medm2t import topics
from medm2t.events import DeadLetter, parse_event
from medm2t.settings import Settings
from stream import keys
from stream.scoring import Scorer
from stream.state import StayStore

log = logging.getLogger("medm2t.worker")
APP_ID = "medm2t-worker"
INGEST_CHUNK = 500          # events applied per Redis round trip
INGEST_WAIT_S = 0.05
STATS_EVERY_S = 10.0

Send = Callable[[str, bytes | None, bytes], Awaitable[None]]  # (topic, key, value)


@dataclass
class Incoming:
    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None


def dead_letter(msg: Incoming, reason: str) -> DeadLetter:
    payload = msg.value or b""
    text = payload[:4096].decode("utf-8", errors="replace")
    key = msg.key.decode("utf-8", errors="replace") if isinstance(msg.key, bytes) else msg.key
    return DeadLetter(topic=msg.topic, partition=msg.partition, offset=msg.offset, key=key, reason=reason[:1000],
                      payload=text, at=datetime.now(timezone.utc).replace(tzinfo=None))


def _reason(exc: ValidationError) -> str:
    errs = exc.errors()
    first = errs[0]
    where = ".".join(str(p) for p in first.get("loc", ())) or "message"
    more = f" (+{len(errs) - 1} more)" if len(errs) > 1 else ""
    return f"invalid event: {where}: {first.get('msg')}{more}"


@dataclass
class Pipeline:
    """Transport-independent core: ingest messages, coalesce changed stays, score them in batches."""

    store: StayStore
    scorers: Sequence[Scorer]
    send: Send
    batch_max: int = 64
    batch_wait_ms: int = 250
    changed: dict[int, None] = field(default_factory=dict)   # insertion-ordered set of stay ids
    stats: dict[str, int] = field(default_factory=lambda: {"events": 0, "duplicates": 0, "deadletters": 0,
                                                          "batches": 0, "scores": 0, "alerts": 0})

    def __post_init__(self):
        self._wake = asyncio.Event()

    async def ingest(self, messages: Sequence[Incoming]) -> None:
        """Validate and apply a chunk of messages; malformed ones go to the dead-letter topic."""
        good = []
        for msg in messages:
            try:
                if msg.value is None:
                    raise ValueError("empty message (no value)")
                event = parse_event(msg.value)
                if event.kind == "outcome":
                    raise ValueError(f"outcome events belong on {topics.OUTCOMES}; the worker never reads them")
                if msg.key is not None and msg.key.decode("utf-8", "replace") != str(event.stay_id):
                    log.debug("message key %r differs from stay_id %s", msg.key, event.stay_id)
                good.append(event)
            except ValidationError as exc:
                await self._dead(msg, _reason(exc))
            except ValueError as exc:
                await self._dead(msg, str(exc))
        if not good:
            return
        pipe = self.store.r.pipeline(transaction=False)
        for event in good:
            await self.store.queue_apply(pipe, event)
        applied = await pipe.execute()
        for event, new in zip(good, applied):
            if new:
                self.changed[event.stay_id] = None
                self.stats["events"] += 1
            else:
                self.stats["duplicates"] += 1
        if self.changed:
            self._wake.set()

    async def _dead(self, msg: Incoming, reason: str) -> None:
        letter = dead_letter(msg, reason)
        log.warning("dead letter topic=%s partition=%s offset=%s reason=%s", msg.topic, msg.partition, msg.offset, reason[:200])
        await self.send(topics.DEADLETTER, msg.key, letter.model_dump_json().encode())
        await self.store.count("deadletters")
        self.stats["deadletters"] += 1

    async def run(self) -> None:
        """The micro-batch loop: flush at batch_max changed stays or batch_wait_ms after the first change."""
        while True:
            await self._wake.wait()
            deadline = time.monotonic() + self.batch_wait_ms / 1000.0
            while len(self.changed) < self.batch_max and time.monotonic() < deadline:
                await asyncio.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
            await self.flush()

    async def flush(self) -> int:
        ids = list(self.changed)[: self.batch_max]
        for sid in ids:
            del self.changed[sid]
        if not self.changed:
            self._wake.clear()
        if not ids:
            return 0
        start = time.perf_counter()
        views = await self.store.views(ids)
        loop = asyncio.get_running_loop()
        for scorer in self.scorers:
            try:  # model inference is blocking work: keep the event loop (consumer heartbeats) free
                scores = await loop.run_in_executor(None, scorer.score_batch, views)
            except Exception:  # noqa: BLE001 - a scorer bug must not stop ingestion or the other scorers
                log.exception("scorer %s failed on a batch of %d stays", scorer.name, len(views))
                await self.store.count(f"scorer_errors_{scorer.name}")
                continue
            alerts = await self.store.write(scores)
            for s in scores:
                await self.send(topics.SCORES, str(s.stay_id).encode(), s.model_dump_json().encode())
            for a in alerts:
                await self.send(topics.ALERTS, str(a.stay_id).encode(), a.model_dump_json().encode())
            self.stats["scores"] += len(scores)
            self.stats["alerts"] += len(alerts)
        latency = (time.perf_counter() - start) * 1000.0
        await self.store.batch_done(latency)
        self.stats["batches"] += 1
        return len(ids)


def faust_broker(settings: Settings) -> list[str]:
    return [f"kafka://{h.strip()}" for h in settings.kafka_url.split(",") if h.strip()]


def _credentials(settings: Settings):
    import ssl

    import faust

    proto = settings.kafka_security_protocol.upper()
    if proto == "PLAINTEXT":
        return None
    ctx = ssl.create_default_context(cafile=str(settings.kafka_ssl_cafile) if settings.kafka_ssl_cafile else None)
    if proto.startswith("SASL"):
        mechanism = (settings.kafka_sasl_mechanism or "PLAIN").upper()
        return faust.SASLCredentials(username=settings.kafka_sasl_username, password=settings.kafka_sasl_password,
                                     mechanism=mechanism, ssl_context=ctx if proto == "SASL_SSL" else None)
    return faust.SSLCredentials(ctx)


def build_app(settings: Settings, scorers: Sequence[Scorer], redis):
    """The Faust app. `redis` is a redis.asyncio client."""
    import faust

    app = faust.App(
        APP_ID,
        broker=faust_broker(settings),
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(settings.run_dir / "worker-data"),
        topic_partitions=settings.partitions,
        web_enabled=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        # A group join waits half the session timeout; Faust's default (60 s) stalls startup for 30 s.
        broker_session_timeout=6.0,
        broker_heartbeat_interval=1.0,
        broker_rebalance_timeout=6.0,
        broker_max_poll_records=2000,
    )
    inputs = app.topic(*topics.INPUT_TOPICS, key_serializer="raw", value_serializer="raw")
    outputs = {t: app.topic(t, key_serializer="raw", value_serializer="raw")
               for t in (topics.SCORES, topics.ALERTS, topics.DEADLETTER)}

    async def send(topic: str, key: bytes | None, value: bytes) -> None:
        await outputs[topic].send(key=key, value=value)

    store = StayStore(redis, settings.history_max)
    pipeline = Pipeline(store, scorers, send, settings.batch_max, settings.batch_wait_ms)

    @app.agent(inputs, name="ingest")
    async def ingest(stream):
        async for chunk in stream.take_events(INGEST_CHUNK, within=INGEST_WAIT_S):
            msgs = [Incoming(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value)
                    for e in chunk]
            await pipeline.ingest(msgs)

    @app.task
    async def scoring_loop():
        await pipeline.run()

    @app.timer(interval=STATS_EVERY_S)
    async def report():
        log.info("worker stats %s", " ".join(f"{k}={v}" for k, v in pipeline.stats.items()))

    @app.task
    async def publish_cards():
        import json

        from stream.scorers import card

        for scorer in scorers:
            await redis.set(keys.model_card(scorer.name), json.dumps(card(scorer), default=str))

    app.pipeline = pipeline  # for tests and introspection
    return app
