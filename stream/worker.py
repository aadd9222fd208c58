"""The scoring worker: a Faust app that consumes icu.events.v2 and runs the Pipeline (stream/pipeline.py):
per-stay state in Redis, scores at clinical-time points (docs/scoring-contract.md), published to
risk.scores.v1 / risk.alerts.v2 (and v1, deprecated), bad input to icu.deadletter.v1. It also consumes risk.alert-actions.v1
(people acknowledging, snoozing and commenting on alerts) and records them on risk.alerts.v2, and, apart from
the scoring, icu.outcomes.v1 for the live alert-quality figures (stream/quality.py).

Delivery is at-least-once (Faust's exactly_once is deliberately not used). Offsets are committed once a
chunk's events are stored in Redis, atomically with the pending points they create, so a kill -9 loses
nothing: a restart rebuilds the pending stays from Redis and scores them. Several workers with the same
app id split the partitions; the Faust web server is off, so they never clash on a port.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Sequence

from medm2t import topics
from medm2t.connections import faust_options, redis_sync, set_fetch_max_wait
from medm2t.kafka import messages_on
from medm2t.settings import Settings
from stream import metrics, quality
from stream.ingest import INGEST_CHUNK
from stream.clocks import PartitionClocks
from stream.pipeline import Pipeline
from stream.policy import DEFAULT_POLICY, AlertPolicy
from stream.runtime import Message
from stream.scoring import Scorer
from stream.state import StayStore

log = logging.getLogger("medm2t.worker")
INGEST_WAIT_S = 0.005  # a chunk: INGEST_CHUNK messages, or what arrived within this long (small when idle)
STATS_EVERY_S = 10.0
QUALITY_EVERY_S = 10.0   # how often the alert-quality history gets a point (when outcomes have arrived)
QUALITY_SHARE = 0.05     # ... but never more than this share of the worker's time (its figures span the ward)


def build_app(settings: Settings, scorers: Sequence[Scorer], redis, policy: AlertPolicy = DEFAULT_POLICY):
    """The Faust app. `redis` is a redis.asyncio client; `policy` is the alert policy the pipeline runs."""
    app = faust_app(settings)
    link = BrokerLink(app)
    pipeline = Pipeline(StayStore(redis, [s.needs for s in scorers]), scorers, link.send, settings.batch_max,
                        settings.point_idle_ms, link.caught_up, policy)
    link.clocks = pipeline.clocks
    _input_agents(app, pipeline, link, settings.max_pending_points)
    _scoring_tasks(app, pipeline, link)
    _housekeeping(app, pipeline, settings, redis, scorers, policy)
    app.pipeline = pipeline  # for tests and introspection
    return app


def faust_app(settings: Settings, app_id: str | None = None, **options):
    """A faust.App with the worker's options and tuning (`options` override them); `medm2t bench stream`'s
    bare agent is built by it too, so that the two compare like for like."""
    import faust

    worker_options = dict(
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
        # Scores go out one message per stay and point: without a linger each becomes its own produce
        # request, and socket writes took most of the worker's time (py-spy, `medm2t bench stream`).
        producer_linger=0.005,
        # A score and its FHIR resource are 2-3 kB: Faust's 16 kB batches filled within the linger, and each
        # full batch went out as one more record batch. 256 kB: +15-20 % events/s (`medm2t bench stream`).
        producer_max_batch_size=256 * 1024,
    )
    app = faust.App(app_id or settings.worker_group, **faust_options(settings), **{**worker_options, **options})
    set_fetch_max_wait(app, settings.fetch_max_wait_ms)
    if not settings.faust_monitor:
        drop_faust_monitor(app)
    return app


class BrokerLink:
    """What the pipeline needs from the broker: a send that returns the delivery, and whether a partition is
    caught up (for the quiet flush)."""

    def __init__(self, app):
        self.app, self.producer = app, None
        self.delivered_at: dict[int, float] = {}  # partition -> wall time of its last chunk handed to us
        self.clocks: PartitionClocks | None = None  # the pipeline's: its offsets delivered per partition

    async def send(self, topic: str, key: bytes | None, value: bytes):
        """Straight to Faust's producer: a Topic.send adds sensors and callbacks per message, and the scoring
        loop sends about one message per input event. Returns a future that resolves once delivered."""
        if self.producer is None:
            self.producer = await self.app.maybe_start_producer()
        return await self.producer.send(topic, key, value, partition=None, timestamp=None, headers=None)

    def caught_up(self, partition: int) -> bool:
        """The broker answered a fetch after our last delivery on the partition and had nothing beyond it.
        A stale high watermark (no fetch since, as during a rebalance while producers go on) is not enough."""
        from faust.types import TP

        tp = TP(topics.EVENTS, partition)
        try:
            consumer = self.app.consumer._thread._ensure_consumer()  # Faust keeps aiokafka's consumer in a thread
            high, polled_ms = consumer.highwater(tp), consumer.last_poll_timestamp(tp)
        except Exception:  # noqa: BLE001 - not started or not assigned yet: not known to be caught up
            return False
        if high is None or not polled_ms or polled_ms / 1000.0 <= self.delivered_at.get(partition, 0.0) \
                or self.clocks is None:
            return False
        return high <= self.clocks.consumed.get(partition, -1) + 1

    def lag(self) -> int:
        """Messages behind the end of the input partitions delivered to us."""
        from faust.types import TP

        lag, consumed = 0, self.clocks.consumed if self.clocks else {}
        for p in list(consumed):
            try:
                lag += max(0, (self.app.consumer.highwater(TP(topics.EVENTS, p)) or 0) - consumed[p] - 1)
            except Exception:  # noqa: BLE001 - not assigned (any more): nothing to count
                pass
        return lag


def _input_agents(app, pipeline: Pipeline, link: BrokerLink, max_pending: int) -> None:
    """One agent per input topic, each handing the pipeline a chunk at a time."""
    inputs = app.topic(*topics.INPUT_TOPICS, key_serializer="raw", value_serializer="raw")
    # Keyed by stay_id with as many partitions as the inputs: Faust's assignor gives a worker the same
    # partitions of both topics, so a stay's actions reach the worker that holds its alert state.
    actions = app.topic(topics.ACTIONS, key_serializer="raw", value_serializer="raw")
    # The only reader of outcomes: they feed the alert-quality figures (stream/quality.py), never a scorer.
    outcomes = app.topic(topics.OUTCOMES, key_serializer="raw", value_serializer="raw")

    @app.agent(inputs, name="ingest")
    async def ingest(stream):
        async for chunk in stream.take_events(INGEST_CHUNK, within=INGEST_WAIT_S):
            now = time.time()
            msgs = [_message(e, now) for e in chunk]
            for m in msgs:
                link.delivered_at[m.partition] = now
            await pipeline.ingest(msgs)
            await pipeline.room_to_buffer(max_pending)

    @app.agent(actions, name="alert-actions")
    async def alert_actions(stream):
        async for chunk in stream.take_events(100, within=INGEST_WAIT_S):
            await pipeline.act_on([_message(e) for e in chunk])

    @app.agent(outcomes, name="outcomes")
    async def outcome_agent(stream):
        async for chunk in stream.take_events(500, within=INGEST_WAIT_S):
            await quality.record_outcomes(pipeline, [_message(e) for e in chunk])


def _scoring_tasks(app, pipeline: Pipeline, link: BrokerLink) -> None:
    @app.on_partitions_assigned.connect
    async def on_assigned(app, assigned, **kwargs):
        await pipeline.assign({tp.partition for tp in assigned if tp.topic == topics.EVENTS})

    @app.task
    async def scoring_loop():
        await pipeline.run()

    @app.timer(interval=STATS_EVERY_S)
    async def report():
        lag = link.lag()
        metrics.CONSUMER_LAG.set(lag)
        log.info("worker stats %s pending_points=%d lag=%d", " ".join(f"{k}={v}" for k, v in pipeline.stats.items()),
                 pipeline.pending_points(), lag)


def _housekeeping(app, pipeline: Pipeline, settings: Settings, redis, scorers: Sequence[Scorer],
                  policy: AlertPolicy) -> None:
    """Timers and one-off tasks beside the scoring: statistics, the alert-quality history, model cards, and
    a check of the retired input topic."""
    history = quality.HistoryTimer(redis_sync(settings), QUALITY_EVERY_S, QUALITY_SHARE)

    @app.timer(interval=QUALITY_EVERY_S)
    async def quality_history():
        try:
            await asyncio.to_thread(history.tick)
        except Exception as exc:  # noqa: BLE001 - a Redis outage pauses the history; the scoring goes on
            log.warning("alert-quality snapshot skipped: %s", exc)

    @app.task
    async def retired_inputs():
        """icu.events.v1 is retired (docs/schemas.md): reading it beside v2 would put two partitions' orders
        under one clock, so the worker leaves it alone, and says so loudly when a producer still writes there."""
        try:
            n = await asyncio.to_thread(messages_on, settings, topics.EVENTS_V1)
        except Exception:  # noqa: BLE001 - a check, not a duty: the broker may not be up yet
            return
        if n:
            log.error("the retired topic %s holds %d messages; this worker does not read it, so any published "
                      "there since the upgrade to %s are not scored: publish them on %s (every v1 message is a "
                      "valid v2 message)", topics.EVENTS_V1, n, topics.EVENTS, topics.EVENTS)

    @app.task
    async def publish_cards():
        from stream.scorers import publish_cards

        await publish_cards(redis, scorers, policy)


def drop_faust_monitor(app) -> None:
    """Start a faust.App without its Monitor sensor. The Monitor's hooks run for every message and event and
    keep statistics nothing here reads (the worker's figures are its own, stream/metrics.py); without them a
    bare Faust agent reads about a fifth faster (docs/benchmarks.md, Faust tuning). Call before the app starts:
    faust adds the Monitor when it collects the app's dependencies at start."""
    collect = app.on_init_dependencies

    def without_monitor():
        dependencies = collect()
        app.sensors.remove(app.monitor)
        return dependencies

    app.on_init_dependencies = without_monitor


def _message(e, received_s: float | None = None) -> Message:
    """A Faust event as the pipeline's Message (the broker's timestamp in ms, when it has one)."""
    m = e.message
    return Message(m.topic, m.partition, m.offset, m.key, m.value, m.timestamp * 1000.0 if m.timestamp else None,
                   received_s)
