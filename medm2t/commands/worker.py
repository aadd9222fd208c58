"""`medm2t worker`: consume the input topics, keep per-stay state in Redis, score and alert."""
from __future__ import annotations

import argparse
import logging

HELP = """Run the scoring worker (a Faust app, consumer group 'medm2t-worker').

It consumes icu.events.v1 and icu.ecg.v1, applies each event to the stay's state in Redis exactly once
(deduplicated by event_id, so redelivery is harmless), and scores the stays that changed in micro-batches
(at --batch-max stays or after --batch-wait-ms). Every score goes to Redis and risk.scores.v1, alert
transitions to risk.alerts.v1, malformed messages with their reason to icu.deadletter.v1.

Scorers (MEDM2T_SCORERS / --scorers): 'auto' runs NEWS2 plus MedM2T when the checkpoint folder exists,
side by side. Start more workers to split the partitions; stop with Ctrl-C.

Services come from MEDM2T_KAFKA_URL / MEDM2T_REDIS_URL or --kafka / --redis.
"""
log = logging.getLogger("medm2t.worker")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("worker", help="score stays as events arrive (Faust consumer)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kafka", metavar="HOST:PORT", help="Kafka bootstrap servers (default: settings.kafka_url)")
    p.add_argument("--redis", metavar="URL", help="Redis URL (default: settings.redis_url)")
    p.add_argument("--scorers", help="auto, news2, medm2t or a comma list (default: settings.scorers)")
    p.add_argument("--batch-max", type=int, help="flush a scoring batch at this many changed stays")
    p.add_argument("--batch-wait-ms", type=int, help="... or this many ms after the first change")
    p.set_defaults(handler=_run)


def settings_from(args: argparse.Namespace):
    """Settings with the command-line overrides applied (shared by the service commands)."""
    from medm2t.settings import get_settings

    overrides = {k: v for k, v in {
        "kafka_url": getattr(args, "kafka", None), "redis_url": getattr(args, "redis", None),
        "scorers": getattr(args, "scorers", None), "batch_max": getattr(args, "batch_max", None),
        "batch_wait_ms": getattr(args, "batch_wait_ms", None),
    }.items() if v is not None}
    return get_settings().model_copy(update=overrides)


def check_redis(settings, attempts: int = 5):
    """A connected sync client, or UserError after retries with backoff."""
    import redis

    from medm2t.cli import UserError
    from stream.kafka import with_retries

    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=3)
    try:
        with_retries("Redis ping", client.ping, attempts=attempts)
    except Exception as exc:  # noqa: BLE001
        raise UserError(f"cannot reach Redis at {settings.redis_url} ({exc}); start the local one with `medm2t stack up`, "
                        f"or point at yours with --redis URL or MEDM2T_REDIS_URL") from None
    return client


def _run(args: argparse.Namespace) -> int:
    import faust
    import redis.asyncio as aioredis

    from medm2t.cli import UserError
    from stream.kafka import BrokerUnreachable, ensure_topics
    from stream.scorers import ScorerConfigError, select_scorers
    from stream.worker import APP_ID, build_app

    settings = settings_from(args)
    if settings.batch_max < 1 or settings.batch_wait_ms < 0:
        raise UserError("--batch-max must be >= 1 and --batch-wait-ms >= 0")
    check_redis(settings).close()
    try:
        ensure_topics(settings)
    except BrokerUnreachable as exc:
        raise UserError(str(exc)) from None
    try:
        scorers = select_scorers(settings)
    except ScorerConfigError as exc:
        raise UserError(str(exc)) from None
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(settings, scorers, aioredis.Redis.from_url(settings.redis_url))
    log.info("worker starting app=%s kafka=%s redis=%s scorers=%s batch_max=%d batch_wait_ms=%d", APP_ID,
             settings.kafka_url, settings.redis_url, ",".join(f"{s.name}@{s.version}" for s in scorers),
             settings.batch_max, settings.batch_wait_ms)
    # Our own INFO lines (stats, dead letters) without Faust's verbose startup tables.
    quiet = {"level": "DEBUG" if args.verbose else "WARNING"}
    logging_config = {"merge": True, "loggers": {name: quiet for name in ("faust", "mode", "aiokafka", "kafka")}}
    worker = faust.Worker(app, loglevel="DEBUG" if args.verbose else "INFO", redirect_stdouts=False,
                          logging_config=logging_config)
    worker.execute_from_commandline()  # returns via SystemExit on Ctrl-C / SIGTERM after a clean stop
    return 0
