"""`medm2t alerts`: print alert transitions from risk.alerts.v1."""
from __future__ import annotations

import argparse
import os
import sys

HELP = """Print alerts (raised / escalated / cleared) from risk.alerts.v1.

It reads every partition without a consumer group (nothing is committed, any number of these can run side
by side). By default it prints the alerts already on the topic and stops; --follow starts at the end of the
topic and waits for new ones (add --from-beginning to see the history first). Stop with Ctrl-C.

examples:
  medm2t alerts --follow
  medm2t alerts --follow --min-level urgent --json | jq .
"""
LEVELS = ("info", "urgent", "emergency")
_COLOUR = {"info": "\033[36m", "urgent": "\033[33m", "emergency": "\033[31;1m"}


def register(sub: argparse._SubParsersAction) -> None:
    from medm2t.settings import get_settings

    s = get_settings()
    p = sub.add_parser("alerts", help="print alerts as they arrive", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--follow", "-f", action="store_true", help="wait for new alerts (start at the end of the topic)")
    p.add_argument("--from-beginning", action="store_true", help="with --follow: print the alerts already on the topic first")
    p.add_argument("--min-level", choices=LEVELS, default="info", help="hide alerts below this level (default info)")
    p.add_argument("--json", action="store_true", help="one Alert JSON object per line")
    p.add_argument("--kafka", metavar="HOST:PORT", help=f"Kafka bootstrap servers (default {s.kafka_url}, MEDM2T_KAFKA_URL)")
    p.set_defaults(handler=_run)


def format_alert(alert, colour: bool = False) -> str:
    mark = {"raised": "RAISED", "escalated": "ESCALATED", "de-escalated": "de-escalated", "cleared": "cleared"}[alert.state]
    level = alert.level.upper()
    if colour:
        level = f"{_COLOUR[alert.level]}{level}\033[0m"
    return (f"{alert.at:%Y-%m-%d %H:%M} {level:<9} {mark:<9} stay {alert.stay_id} "
            f"[{alert.scorer} {alert.task}] {alert.reason}")


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from medm2t.cli import UserError
    from medm2t.commands.worker import settings_from
    from medm2t.events import Alert
    from medm2t.topics import ALERTS
    from stream.kafka import BrokerUnreachable, groupless_consumer

    settings = settings_from(args)
    from_beginning = args.from_beginning or not args.follow
    try:
        consumer = groupless_consumer(settings, [ALERTS], from_beginning,
                                      consumer_timeout_ms=float("inf") if args.follow else 3000)
    except BrokerUnreachable as exc:
        raise UserError(str(exc)) from None
    floor = LEVELS.index(args.min_level)
    colour = sys.stdout.isatty() and not args.json
    if args.follow:  # on stderr, so it never mixes with --json output; it means "positioned, ready"
        print(f"following {ALERTS} on {settings.kafka_url} (level >= {args.min_level}); Ctrl-C to stop", file=sys.stderr)
    try:
        for record in consumer:
            try:
                alert = Alert.model_validate_json(record.value)
            except ValidationError as exc:
                print(f"skipped a malformed message at {record.topic}/{record.partition}@{record.offset}: "
                      f"{exc.errors()[0]['msg']}", file=sys.stderr)
                continue
            if LEVELS.index(alert.level) < floor:
                continue
            print(alert.model_dump_json() if args.json else format_alert(alert, colour), flush=True)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # the reader of our pipe (head, jq) went away: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
    finally:
        consumer.close()
    return 0
