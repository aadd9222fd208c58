"""`medm2t stack up|down|status`: the local Kafka-protocol broker (tansu) and Redis (valkey), no Docker."""
from __future__ import annotations

import argparse

HELP = """Start, stop and check the local services: the tansu Kafka-protocol broker (in-memory storage) and
redis-server (or the bundled valkey-server), bound to 127.0.0.1. They run in the background, outlive this
command, and log to RUN_DIR/{kafka,redis}.log with pid files beside them (RUN_DIR: MEDM2T_RUN_DIR,
default .medm2t/run). `up` also creates the topics. `down` stops only what `up` started.

Redis keeps its data in an append-only file (fsync every second) in RUN_DIR/redis-data, reloaded by the
next `up`; delete that folder for an empty Redis. It requires a password: MEDM2T_REDIS_PASSWORD if set,
else one generated at the first `up` into RUN_DIR/redis.password (mode 0600), where every other command
finds it for a 127.0.0.1/localhost Redis URL. `up --no-password` starts it without one.

With --kafka HOST:PORT / --redis URL (or MEDM2T_KAFKA_URL / MEDM2T_REDIS_URL set to a non-local service)
nothing is started: `up` only creates the topics there and `status` checks them.

examples:
  medm2t stack up
  medm2t stack up --kafka-port 19092 --redis-port 16379   # then export the printed MEDM2T_* variables
  medm2t stack status
  medm2t stack down
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stack", help="start/stop/check the local broker and Redis", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kafka-port", type=int, help="local broker port (default: MEDM2T_KAFKA_PORT, else 9092)")
    common.add_argument("--redis-port", type=int, help="local Redis port (default: MEDM2T_REDIS_PORT, else 6379)")
    common.add_argument("--kafka", metavar="HOST:PORT", help="use this external broker instead of starting one")
    common.add_argument("--redis", metavar="URL", help="use this external Redis instead of starting one")
    ssub = p.add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    up = ssub.add_parser("up", parents=[common], help="start the services (if not running) and create the topics")
    up.add_argument("--no-password", action="store_true",
                    help="start Redis without a password (and forget RUN_DIR/redis.password)")
    up.set_defaults(handler=_up)
    ssub.add_parser("down", parents=[common], help="stop the services that `up` started").set_defaults(handler=_down)
    ssub.add_parser("status", parents=[common], help="health of broker, Redis and topics").set_defaults(handler=_status)


class Stack:
    """What `stack` manages, resolved from settings and flags."""

    def __init__(self, args: argparse.Namespace):
        from medm2t.cli.worker import settings_from
        from medm2t.settings import with_overrides
        from stream.services import kafka_service, redis_service

        base = settings_from(argparse.Namespace())
        self.kafka_port = args.kafka_port or base.kafka_port
        self.redis_port = args.redis_port or base.redis_port
        self.kafka_external = args.kafka
        self.redis_external = args.redis
        self.run_dir = base.run_dir
        self.kafka = None if args.kafka else kafka_service(self.kafka_port, self.run_dir)
        self.redis = None if args.redis else redis_service(self.redis_port, self.run_dir)
        self.settings = with_overrides(base, kafka_url=args.kafka or f"127.0.0.1:{self.kafka_port}",
                                       redis_url=args.redis or f"redis://127.0.0.1:{self.redis_port}/0")


def _up(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError
    from medm2t.connections import redis_password_file, stack_redis_password
    from medm2t.kafka import BrokerUnreachable, ensure_topics
    from medm2t.settings import safe_url
    from stream.services import ServiceError, redis_service

    stack = Stack(args)
    password_file = redis_password_file(stack.settings)
    for svc in (stack.kafka, stack.redis):
        if svc is None:
            continue
        portfile = svc.pidfile.with_suffix(".port")
        if svc.pid() is not None:
            port = int(portfile.read_text()) if portfile.exists() else svc.port
            if port != svc.port:
                raise UserError(f"{svc.name} started by `stack up` is already running on port {port}, not {svc.port}; "
                                f"run `medm2t stack down` first or use port {port}")
            print(f"{svc.name}: already running (pid {svc.pid()}, port {svc.port})")
            if svc is stack.redis and args.no_password and password_file.exists():
                print(f"redis: still requires the password in {password_file}; `medm2t stack down` first to "
                      "restart it without one")
            continue
        note = ""
        if svc is stack.redis:
            explicit = stack.settings.redis.password
            if args.no_password and explicit is not None and explicit.get_secret_value():
                raise UserError("--no-password, but MEDM2T_REDIS_PASSWORD is set (clients would send it); unset one")
            if args.no_password:
                password_file.unlink(missing_ok=True)
            password = None if args.no_password else stack_redis_password(stack.settings)
            svc = stack.redis = redis_service(stack.redis_port, stack.run_dir, password)
            note = (", no password" if password is None else
                    ", password from MEDM2T_REDIS_PASSWORD" if explicit is not None else f", password in {password_file}")
        try:
            pid = svc.start()
        except ServiceError as exc:
            raise UserError(str(exc)) from None
        portfile.write_text(str(svc.port))
        print(f"{svc.name}: started on 127.0.0.1:{svc.port} (pid {pid}, log {svc.log}{note})")
    try:
        created = ensure_topics(stack.settings)
    except BrokerUnreachable as exc:
        raise UserError(str(exc)) from None
    for topic, state in created.items():
        print(f"topic {topic}: {state}")
    from medm2t.settings import get_settings

    if (stack.settings.kafka_url, stack.settings.redis_url) != (get_settings().kafka_url, get_settings().redis_url):
        print("other commands need these settings:")
        print(f"  export MEDM2T_KAFKA_URL={stack.settings.kafka_url} MEDM2T_REDIS_URL={safe_url(stack.settings.redis_url)}")
    return 0


def _down(args: argparse.Namespace) -> int:
    stack = Stack(args)
    for svc in (stack.kafka, stack.redis):
        if svc is None:
            continue
        pid = svc.pid()
        svc.pidfile.with_suffix(".port").unlink(missing_ok=True)
        if svc.stop():
            print(f"{svc.name}: stopped (pid {pid})")
        else:
            print(f"{svc.name}: not running (no live pid in {svc.pidfile})")
    if stack.kafka_external or stack.redis_external:
        print("external services are left alone")
    return 0


def _status(args: argparse.Namespace) -> int:
    import redis

    from medm2t.connections import redis_error_message, redis_sync
    from medm2t.kafka import BrokerUnreachable, topic_partitions
    from medm2t.settings import safe_url
    from medm2t.topics import ALL_TOPICS

    stack = Stack(args)
    healthy = True
    for svc in (stack.kafka, stack.redis):
        if svc is not None:
            pid = svc.pid()
            print(f"{svc.name}: {'process pid ' + str(pid) if pid else 'no process started by `stack up`'} (port {svc.port})")
    where = safe_url(stack.settings.redis_url)
    try:
        info = redis_sync(stack.settings, socket_connect_timeout=2).info("server")
        print(f"redis {where}: ok (version {info.get('redis_version') or info.get('valkey_version')})")
    except redis.RedisError as exc:
        healthy = False
        print(f"redis {where}: DOWN ({redis_error_message(stack.settings, exc)})")
    try:
        parts = topic_partitions(stack.settings, attempts=1)
        print(f"kafka {stack.settings.kafka_url}: ok")
        for topic in ALL_TOPICS:
            n = parts.get(topic)
            print(f"  topic {topic}: {f'{n} partitions' if n else 'MISSING (run `medm2t stack up`)'}")
            healthy &= bool(n)
    except BrokerUnreachable as exc:
        healthy = False
        print(f"kafka {stack.settings.kafka_url}: DOWN ({exc})")
    return 0 if healthy else 1
