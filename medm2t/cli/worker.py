"""`medm2t worker`: consume the input topics, keep per-stay state in Redis, score and alert."""
from __future__ import annotations

import argparse
import logging

HELP = """Run the scoring worker (a Faust app, consumer group MEDM2T_WORKER_GROUP, default 'medm2t-worker').

It consumes icu.events.v2 (single events and observation sets), stores each event in the stay's Redis
state exactly once (deduplicated by event_id; the same id with other content is dead-lettered as a
conflict) and scores each stay at its
scoring points in clinical time: NEWS2 at every point, MedM2T at most once per --medm2t-cadence-min
clinical minutes, on a NEWS2 band change and at the stay's close (docs/scoring-contract.md). The score
stream is the same however fast the worker runs, however many workers split the partitions, and across
kill -9 and restarts. Scores go to Redis and risk.scores.v1, a FHIR RiskAssessment per MedM2T score to
fhir.riskassessment.v1, alert transitions to risk.alerts.v2 (and the deprecated v1), bad messages
with their reason (never their content) to icu.deadletter.v1. People's actions on alerts come in on
risk.alert-actions.v1; outcomes on icu.outcomes.v1 feed only the alert-quality figures (`medm2t report`),
never a scorer.

Scorers (MEDM2T_SCORERS / --scorers): 'auto' runs NEWS2 plus MedM2T when the checkpoint folder exists,
side by side. Workers split the partitions: --processes auto starts one worker process per core (at most
one per partition) from this one command, restarts one that dies and stops all on Ctrl-C; more shells or
machines running `medm2t worker` join the same group.

Services come from MEDM2T_KAFKA_URL / MEDM2T_REDIS_URL or --kafka / --redis; MEDM2T_REDIS_CLUSTER=1 when
the URL is a node of a Redis Cluster (docs/deployment.md: how it scales). MEDM2T_FETCH_MAX_WAIT_MS (default
20) bounds how long a fetch waits at the broker: tansu answers a waiting fetch only when that wait runs out.
--metrics-port serves Prometheus metrics, among them event->score latency split by stage
(medm2t_point_stage_seconds).
"""
log = logging.getLogger("medm2t.worker")


def register(sub: argparse._SubParsersAction) -> None:
    from medm2t.cli import help_settings
    from medm2t.settings import safe_url

    s = help_settings()
    p = sub.add_parser("worker", help="score stays as events arrive (Faust consumer)", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kafka", metavar="HOST:PORT", help=f"Kafka bootstrap servers (default {s.kafka_url}, MEDM2T_KAFKA_URL)")
    p.add_argument("--redis", metavar="URL", help=f"Redis URL (default {safe_url(s.redis_url)}, MEDM2T_REDIS_URL)")
    p.add_argument("--scorers", help=f"auto, news2, medm2t or a comma list (default {s.scorers}, MEDM2T_SCORERS)")
    p.add_argument("--batch-max", type=int, help=f"most stays per scoring batch (default {s.batch_max}, MEDM2T_BATCH_MAX)")
    p.add_argument("--medm2t-cadence-min", type=float,
                   help="MedM2T scores at most once per this many clinical minutes; 0 = every point")
    p.add_argument("--metrics-port", type=int, help="serve Prometheus /metrics on 127.0.0.1:PORT (0 = off; with "
                                                    "--processes N, ports PORT to PORT+N-1)")
    p.add_argument("--processes", metavar="N|auto", help="worker processes to run from this command (default 1; "
                                                         "'auto': one per core, or per two cores when MedM2T runs in "
                                                         "a process of its own; at most one per partition)")
    p.set_defaults(handler=_run)


def settings_from(args: argparse.Namespace):
    """Settings with the command-line overrides applied (shared by the service commands)."""
    from medm2t.settings import get_settings, with_overrides

    overrides = {k: v for k, v in {
        "kafka_url": getattr(args, "kafka", None), "redis_url": getattr(args, "redis", None),
        "scorers": getattr(args, "scorers", None), "batch_max": getattr(args, "batch_max", None),
        "medm2t_cadence_min": getattr(args, "medm2t_cadence_min", None),
        "metrics_port": getattr(args, "metrics_port", None),
    }.items() if v is not None}
    return with_overrides(get_settings(), **overrides)


def _passed_on(args: argparse.Namespace) -> list[str]:
    """The command line each worker process gets (the supervisor sets --processes and --metrics-port)."""
    out = []
    for flag, value in (("--kafka", args.kafka), ("--redis", args.redis), ("--scorers", args.scorers),
                        ("--batch-max", args.batch_max), ("--medm2t-cadence-min", args.medm2t_cadence_min)):
        if value is not None:
            out += [flag, str(value)]
    return out


def check_redis(settings, attempts: int = 5):
    """A connected sync client, or UserError after retries with backoff (at once for a rejected password)."""
    from redis.exceptions import AuthenticationError

    from medm2t.cli import UserError
    from medm2t.connections import redis_error_message, redis_sync
    from medm2t.kafka import with_retries

    client = redis_sync(settings, socket_connect_timeout=3)
    try:
        with_retries("Redis ping", client.ping, attempts=attempts, fatal=(AuthenticationError,))
    except Exception as exc:  # noqa: BLE001
        raise UserError(redis_error_message(settings, exc)) from None
    return client


def _run(args: argparse.Namespace) -> int:
    import faust

    from medm2t.cli import UserError
    from medm2t.connections import redis_async
    from medm2t.kafka import BrokerUnreachable, ensure_topics
    from medm2t.settings import safe_url
    from stream.policy import PolicyError, load_policy
    from stream.scorers import ScorerConfigError, select_scorers
    from stream.worker import build_app

    from medm2t.cli.worker_processes import cores_each, processes_wanted, supervise

    settings = settings_from(args)
    cores = cores_each(settings)
    n = processes_wanted(args.processes, settings.partitions, cores)
    check_redis(settings).close()
    if n > 1:
        return supervise(n, _passed_on(args), settings.metrics_port, args.verbose, settings.torch_threads, cores)
    try:
        ensure_topics(settings)
    except BrokerUnreachable as exc:
        raise UserError(str(exc)) from None
    try:
        scorers = select_scorers(settings)
    except ScorerConfigError as exc:
        raise UserError(str(exc)) from None
    try:
        policy = load_policy(settings, [s.name for s in scorers])
    except PolicyError as exc:
        raise UserError(str(exc)) from None
    tuned_for = (policy.tuned or {}).get("checkpoint")
    if tuned_for and tuned_for not in {s.version for s in scorers}:
        log.warning("alert policy %r was tuned for %s, which is not running (scorers: %s): its thresholds may not "
                    "suit this model; run `medm2t alerts calibrate` for it", policy.name, tuned_for,
                    ", ".join(s.version for s in scorers))
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    app = build_app(settings, scorers, redis_async(settings), policy)
    if settings.metrics_port:
        from stream.metrics import serve

        serve(settings.metrics_port)
    log.info("worker starting app=%s kafka=%s redis=%s scorers=%s batch_max=%d cadence_min=%g alert_policy=%s",
             settings.worker_group, settings.kafka_url, safe_url(settings.redis_url),
             ",".join(f"{s.name}@{s.version}" for s in scorers), settings.batch_max, settings.medm2t_cadence_min,
             policy.name)
    # Our own INFO lines (stats, dead letters) without Faust's verbose startup tables.
    quiet = {"level": "DEBUG" if args.verbose else "WARNING"}
    logging_config = {"merge": True, "loggers": {name: quiet for name in ("faust", "mode", "aiokafka", "kafka")}}
    worker = faust.Worker(app, loglevel="DEBUG" if args.verbose else "INFO", redirect_stdouts=False,
                          logging_config=logging_config)
    worker.execute_from_commandline()  # returns via SystemExit on Ctrl-C / SIGTERM after a clean stop
    return 0
