"""The worker's Prometheus metrics, declared once (served on MEDM2T_METRICS_PORT by `medm2t worker`).

No label carries a patient value or id: only counts, sizes and durations.
"""
from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

EVENTS = Counter("medm2t_events", "Input events applied (new)", ["outcome"])
SCORES = Counter("medm2t_scores", "Scores published")
ALERTS = Counter("medm2t_alerts", "Alert transitions published")
UNKNOWN_ITEMS = Counter("medm2t_unknown_items_ignored", "Input measurements of items the model never saw in "
                        "training, ignored by it (the log names each such item once)")
POINTS_PENDING = Gauge("medm2t_points_pending", "Scoring points buffered and not yet scored")
CONSUMER_LAG = Gauge("medm2t_consumer_lag", "Messages behind the end of the input partitions owned")
BATCH_STAYS = Histogram("medm2t_batch_stays", "Stays per scoring batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
FORWARD_POINTS = Histogram("medm2t_forward_points", "Points scored in one pass of a cadence scorer (the model's batch)",
                           ["scorer"], buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512))
BATCH_SECONDS = Histogram("medm2t_batch_seconds", "Wall time of one scoring batch",
                          buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
EVENT_TO_SCORE = Histogram("medm2t_event_to_score_seconds", "Kafka timestamp of a point's first event to its scores "
                           "delivered", buckets=_LATENCY_BUCKETS)
# The same span in stages, each from the end of the one before (their means add up to the total's).
STAGES = ("delivered", "applied", "completed", "published")
POINT_STAGE = Histogram("medm2t_point_stage_seconds", "One stage of a point's event->score latency: delivered "
                        "(Kafka timestamp to the consumer handing it over), applied (APPLY in Redis, buffered), "
                        "completed (waiting for the point to complete and a batch to take it), published "
                        "(scored, sent and delivered)", ["stage"], buckets=_LATENCY_BUCKETS)

_OUTCOMES = {"events": "applied", "duplicates": "duplicate", "deadletters": "dead_letter"}


def count(name: str, n: int = 1) -> None:
    if name in _OUTCOMES:
        EVENTS.labels(_OUTCOMES[name]).inc(n)
    elif name == "scores":
        SCORES.inc(n)
    elif name == "alerts":
        ALERTS.inc(n)


def observe_batch(stays: int, seconds: float) -> None:
    BATCH_STAYS.observe(stays)
    BATCH_SECONDS.observe(seconds)


def observe_forward(scorer: str, points: int) -> None:
    FORWARD_POINTS.labels(scorer).observe(points)


_STAGE_HISTOGRAMS = [POINT_STAGE.labels(stage) for stage in STAGES]


def observe_point(times: list[float]) -> None:
    """`times`: wall times (s) of a point's first event when sent, then at the end of each of STAGES."""
    EVENT_TO_SCORE.observe(max(0.0, times[-1] - times[0]))
    for histogram, start, end in zip(_STAGE_HISTOGRAMS, times, times[1:]):
        histogram.observe(max(0.0, end - start))


def serve(port: int, host: str = "127.0.0.1") -> None:
    start_http_server(port, addr=host)
