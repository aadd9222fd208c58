"""Kafka plumbing shared by the commands, the replay producer, the worker and the dashboard's alert actions:
topic creation, broker checks, a durable producer and a group-less consumer, all connected through
medm2t.connections.kafka_python_options. It lives in the core because replay/ (below stream/) produces with it.

Verified against the tansu broker: CreateTopics works through kafka-python's KafkaAdminClient, but its
`list_topics`/`describe_topics` fail decoding tansu's authorized-operations field, so topic metadata is read
through a KafkaConsumer instead. kafka-python 3.x consumer groups never get an assignment from tansu, so
subscribers here use `assign()` on every partition without a group.
"""
from __future__ import annotations

import logging
import time
from typing import Iterable

from medm2t.connections import compression_type, kafka_python_options
from medm2t.settings import Settings
from medm2t.topics import ALL_TOPICS, EVENTS

log = logging.getLogger(__name__)
# kafka-python logs every connection attempt (INFO) and refusal (ERROR); the commands report broker problems
# themselves in one line, so keep its output out of the way.
logging.getLogger("kafka").setLevel(logging.CRITICAL)


class BrokerUnreachable(RuntimeError):
    pass


def unreachable_message(settings: Settings, exc: BaseException | str) -> str:
    return (f"cannot reach the Kafka broker at {settings.kafka_url} ({exc}); start the local one with "
            f"`medm2t stack up`, or point at yours with --kafka HOST:PORT or MEDM2T_KAFKA_URL")


def with_retries(what: str, fn, attempts: int = 5, first_delay: float = 0.5,
                 fatal: tuple[type[BaseException], ...] = ()):
    """Call fn(), retrying with exponential backoff on any exception but `fatal` ones; re-raise the last one."""
    delay = first_delay
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001 - connection errors come in many types
            if attempt == attempts or isinstance(exc, fatal):
                raise
            log.warning("%s failed (attempt %d/%d): %s; retrying in %.1f s", what, attempt, attempts, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 10.0)


def topic_partitions(settings: Settings, topics: Iterable[str] = ALL_TOPICS, attempts: int = 5) -> dict[str, int]:
    """Partition count of each existing topic among `topics` (missing topics are left out)."""
    from kafka import KafkaConsumer

    opts = kafka_python_options(settings)

    def read() -> dict[str, int]:
        consumer = KafkaConsumer(**opts, request_timeout_ms=10000, api_version_auto_timeout_ms=5000)
        try:
            existing = consumer.topics()
            return {t: len(consumer.partitions_for_topic(t) or ()) for t in topics if t in existing}
        finally:
            consumer.close()

    try:
        return with_retries("Kafka metadata", read, attempts=attempts)
    except Exception as exc:  # noqa: BLE001
        raise BrokerUnreachable(unreachable_message(settings, exc)) from None


def ensure_topics(settings: Settings, topics: Iterable[str] = ALL_TOPICS) -> dict[str, str]:
    """Create the missing topics with settings.partitions. Returns {topic: 'created' | 'exists (N partitions)'}."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    topics = list(topics)
    existing = topic_partitions(settings, topics)
    result = {t: f"exists ({n} partitions)" for t, n in existing.items()}
    missing = [t for t in topics if t not in existing]
    if not missing:
        return result
    opts = kafka_python_options(settings)
    try:
        admin = with_retries("Kafka admin connect", lambda: KafkaAdminClient(**opts))
    except Exception as exc:  # noqa: BLE001
        raise BrokerUnreachable(unreachable_message(settings, exc)) from None
    try:
        for topic in missing:  # one request each: a topic created meanwhile by another process is not an error
            try:
                admin.create_topics([NewTopic(topic, settings.partitions, 1)])
                result[topic] = "created"
            except TopicAlreadyExistsError:
                result[topic] = "exists"
    finally:
        admin.close()
    for topic, n in existing.items():
        if n != settings.partitions and topic == EVENTS:
            log.warning("topic %s has %d partitions, settings.partitions is %d", topic, n, settings.partitions)
    return result


def recreate_topics(settings: Settings, topics: Iterable[str] = ALL_TOPICS) -> None:
    """Delete `topics` (those that exist) and create them empty: a fresh run for tests and benchmarks."""
    from kafka.admin import KafkaAdminClient

    topics = list(topics)
    admin = KafkaAdminClient(**kafka_python_options(settings))
    try:
        admin.delete_topics(topics)
    except Exception:  # noqa: BLE001 - the broker may not know some of them yet
        pass
    finally:
        admin.close()
    time.sleep(0.5)
    ensure_topics(settings, topics)


def make_producer(settings: Settings, **overrides):
    """A durable kafka-python producer (acks=all, batching, retries with backoff); clear error if unreachable."""
    from kafka import KafkaProducer

    opts = dict(kafka_python_options(settings), compression_type=compression_type(settings), acks="all",
                linger_ms=20, batch_size=256 * 1024, retries=10, retry_backoff_ms=200,
                max_request_size=4 * 1024 * 1024, request_timeout_ms=30000,
                max_in_flight_requests_per_connection=1)  # 1 in flight keeps per-stay order through retries
    opts.update(overrides)
    try:
        return with_retries("Kafka connect", lambda: KafkaProducer(**opts))
    except Exception as exc:  # noqa: BLE001
        raise BrokerUnreachable(unreachable_message(settings, exc)) from None


def messages_on(settings: Settings, topic: str) -> int:
    """How many messages `topic` holds (0 when it does not exist)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_python_options(settings), request_timeout_ms=10000,
                             api_version_auto_timeout_ms=5000)
    try:
        parts = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        if not parts:
            return 0
        ends, starts = consumer.end_offsets(parts), consumer.beginning_offsets(parts)
        return sum(ends[tp] - starts[tp] for tp in parts)
    finally:
        consumer.close()


def groupless_consumer(settings: Settings, topics: Iterable[str], from_beginning: bool, **overrides):
    """A consumer assigned to every partition of `topics`, positioned at the beginning or the end. No group,
    no commits: each subscriber sees everything (and tansu's consumer groups do not work with kafka-python 3)."""
    from kafka import KafkaConsumer, TopicPartition

    opts = dict(kafka_python_options(settings), group_id=None, enable_auto_commit=False, **overrides)
    try:
        consumer = with_retries("Kafka connect", lambda: KafkaConsumer(**opts))
    except Exception as exc:  # noqa: BLE001
        raise BrokerUnreachable(unreachable_message(settings, exc)) from None
    parts = []
    for topic in topics:
        ids = consumer.partitions_for_topic(topic)
        if not ids:
            consumer.close()
            raise BrokerUnreachable(f"topic {topic} does not exist on {settings.kafka_url}; create it with `medm2t stack up`")
        parts += [TopicPartition(topic, p) for p in sorted(ids)]
    consumer.assign(parts)
    (consumer.seek_to_beginning if from_beginning else consumer.seek_to_end)(*parts)
    for tp in parts:  # resolve the (lazy) seek now, so "from the end" means the end at creation time
        consumer.position(tp)
    return consumer
