"""`medm2t alerts`: print alert records from risk.alerts.v2, and act on alerts (ack, snooze, unsnooze, comment)."""
from __future__ import annotations

import argparse
import os
import sys

from medm2t.cli.alerts_calibrate import register_calibrate
from medm2t.vocabulary import LEVEL_NAMES, Level

HELP = """Print alert records (raised / level-rose / not-acknowledged / acknowledged / snoozed / cleared ...)
from risk.alerts.v2, or act on an alert with one of the actions below.

It reads every partition without a consumer group (nothing is committed, any number of these can run side
by side). By default it prints the alerts already on the topic and stops; --follow starts at the end of the
topic and waits for new ones (add --from-beginning to see the history first). Stop with Ctrl-C.

examples:
  medm2t alerts --follow
  medm2t alerts --follow --min-level urgent --json | jq .
  medm2t alerts ack 3f2a9c0d1e2b3a4c5d6e7f80 --by nurse.kim
  medm2t alerts snooze 3f2a9c0d1e2b3a4c5d6e7f80 --by dr.lee --for 30m --reason "fluids running, review at 10:00"
"""
ACTION_HELP = """Send a person's action on an alert to risk.alert-actions.v1 and wait until the worker records it.

ALERT_ID is the alert_id of any record of the alert (`medm2t alerts --json` prints them; on the dashboard,
act from the board's action panel or the patient page instead).
Durations are clinical time (the replay's clock): an urgent or emergency alert nobody acknowledges escalates
after the alert policy's escalate_after_min, and a snooze may last at most its snooze_max_min (the policy the
worker published; MEDM2T_ESCALATE_AFTER_MIN / MEDM2T_SNOOZE_MAX_MIN override the file's). The worker
rejects an action on an alert that has cleared (except a comment) to icu.deadletter.v1, with the reason.
"""
ACTIONS = {"ack": "acknowledge an alert: it stops escalating at its current level",
           "snooze": "snooze an alert for --for (with a --reason); it comes back when the snooze ends",
           "unsnooze": "end a snooze now",
           "comment": "add a note (--reason) to an alert's audit trail"}
_COLOUR = {Level.INFO: "\033[36m", Level.URGENT: "\033[33m", Level.EMERGENCY: "\033[31;1m"}


def register(sub: argparse._SubParsersAction) -> None:
    from medm2t.cli import help_settings
    from medm2t.settings import safe_url

    s = help_settings()
    p = sub.add_parser("alerts", help="print alerts as they arrive", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--follow", "-f", action="store_true", help="wait for new alerts (start at the end of the topic)")
    p.add_argument("--from-beginning", action="store_true", help="with --follow: print the alerts already on the topic first")
    p.add_argument("--min-level", choices=LEVEL_NAMES, default=Level.INFO.value, help="hide alerts below this level (default info)")
    p.add_argument("--json", action="store_true", help="one Alert JSON object per line")
    p.add_argument("--kafka", metavar="HOST:PORT", help=f"Kafka bootstrap servers (default {s.kafka_url}, MEDM2T_KAFKA_URL)")
    p.set_defaults(handler=_run)
    acts = p.add_subparsers(dest="alert_action", metavar="ACTION", title="actions (instead of printing)")
    for name, text in ACTIONS.items():
        a = acts.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]}.\n\n{ACTION_HELP}",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        a.add_argument("alert_id", metavar="ALERT_ID", help="the alert_id of any record of the alert")
        a.add_argument("--by", required=True, metavar="USER", help="who acts (recorded in the audit trail)")
        a.add_argument("--reason", required=name in ("snooze", "comment"), metavar="TEXT",
                       help="why (required for snooze and comment)" if name in ("ack", "unsnooze") else "why (required)")
        if name == "snooze":
            a.add_argument("--for", dest="snooze_for", required=True, type=_minutes, metavar="DURATION",
                           help="how long, e.g. 30m, 2h or 45 (minutes); at most the snooze_max_min of the alert "
                                "policy the workers run (a longer one is refused, naming it)")
        a.add_argument("--wait", type=float, default=10.0, metavar="SECONDS",
                       help="how long to wait for the worker's record (default 10; 0: do not wait)")
        a.add_argument("--kafka", metavar="HOST:PORT", help=f"Kafka bootstrap servers (default {s.kafka_url})")
        a.add_argument("--redis", metavar="URL", help=f"Redis URL (default {safe_url(s.redis_url)})")
        a.set_defaults(handler=_act)
    register_calibrate(acts)


def format_alert(alert, colour: bool = False) -> str:
    from medm2t.events import ESCALATIONS

    mark = alert.state.upper() if alert.state in ("raised", *ESCALATIONS, "re-presented") else alert.state
    level = alert.level.upper()
    if colour:
        level = f"{_COLOUR[alert.level]}{level}\033[0m"
    who = "" if alert.by == "system" else f" by {alert.by}"
    return (f"{alert.at:%Y-%m-%d %H:%M} {level:<9} {mark:<16} stay {alert.stay_id} "
            f"[{alert.scorer} {alert.task}]{who} {alert.reason}  (id {alert.alert_id})")


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from medm2t.cli import UserError
    from medm2t.cli.worker import settings_from
    from medm2t.events import Alert
    from medm2t.kafka import BrokerUnreachable, groupless_consumer
    from medm2t.topics import ALERTS

    settings = settings_from(args)
    from_beginning = args.from_beginning or not args.follow
    try:
        consumer = groupless_consumer(settings, [ALERTS], from_beginning,
                                      consumer_timeout_ms=float("inf") if args.follow else 3000)
    except BrokerUnreachable as exc:
        raise UserError(str(exc)) from None
    floor = Level(args.min_level).rank
    colour = sys.stdout.isatty() and not args.json
    if args.follow:  # on stderr, so it never mixes with --json output; it means "positioned, ready"
        print(f"following {ALERTS} on {settings.kafka_url} (level >= {args.min_level}); Ctrl-C to stop", file=sys.stderr)
    try:
        for record in consumer:
            try:
                alert = Alert.read(record.value)
            except ValidationError as exc:
                print(f"skipped a malformed message at {record.topic}/{record.partition}@{record.offset}: "
                      f"{exc.errors()[0]['msg']}", file=sys.stderr)
                continue
            if Level(alert.level).rank < floor:
                continue
            print(alert.model_dump_json() if args.json else format_alert(alert, colour), flush=True)
    except KeyboardInterrupt:
        pass
    except BrokenPipeError:  # the reader of our pipe (head, jq) went away: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no flush error at exit
    finally:
        consumer.close()
    return 0


def _minutes(text: str) -> float:
    """'30m', '2h', '1h30m' or a plain number of minutes."""
    import re

    m = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m?)?\s*", text)
    if not text.strip() or m is None or (m.group(1) is None and m.group(2) is None):
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (use e.g. 30m, 2h, 1h30m or 45)")
    minutes = float(m.group(1) or 0) * 60 + float(m.group(2) or 0)
    if minutes <= 0:
        raise argparse.ArgumentTypeError("a snooze must last longer than 0 minutes")
    return minutes


def _act(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from medm2t.cli import UserError
    from medm2t.cli.worker import check_redis, settings_from
    from medm2t.kafka import BrokerUnreachable, make_producer
    from stream.alert_actions import UnknownAlert, new_action, recorded, send
    from stream.policy import load_policy, published

    settings = settings_from(args)
    redis = check_redis(settings)
    minutes = getattr(args, "snooze_for", None)
    snooze_max = (published(redis) or load_policy(settings)).snooze_max_min
    if minutes is not None and minutes > snooze_max:
        raise UserError(f"a snooze of {minutes:g} min is past the alert policy's maximum of {snooze_max:g} min")
    try:
        action = new_action(redis, args.alert_id, args.alert_action, args.by, args.reason, minutes)
    except UnknownAlert as exc:
        raise UserError(str(exc)) from None
    except ValidationError as exc:
        raise UserError(f"invalid {args.alert_action}: {exc.errors()[0]['msg']}") from None
    try:
        producer = make_producer(settings)
    except BrokerUnreachable as exc:
        raise UserError(str(exc)) from None
    try:
        send(producer, action)
    finally:
        producer.close()
    record = recorded(redis, action, args.wait) if args.wait > 0 else None
    if record is not None:
        print(format_alert(record))
        return 0
    if args.wait > 0:
        print(f"sent {args.alert_action} {action.action_id} for stay {action.stay_id}, but the worker has not recorded "
              f"it within {args.wait:g} s: is `medm2t worker` running? A rejected action is on icu.deadletter.v1 "
              f"with its reason.", file=sys.stderr)
        return 1
    print(f"sent {args.alert_action} {action.action_id} for stay {action.stay_id}")
    return 0
