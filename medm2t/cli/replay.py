"""`medm2t replay`: publish a data source to Kafka as one time-ordered stream."""
from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from datetime import datetime

HELP = """Replay a data source onto the input topics as one stream ordered by the time each event became
known (storetime where the source has one), keyed by stay_id.

Time model (--mode):
  ward      each stay is re-anchored onto one simulated clock starting now; --beds beds start occupied
            with staggered admissions and a freed bed takes the next stay (default).
  recorded  original timestamps (holds the selected stays in memory: narrow big sources with --stays/--limit).

Speed: --speed N plays N x real time (sleeping on the simulated clock); --speed max as fast as possible.
Outcomes go to icu.outcomes.v1 (evaluation only), everything else (ECGs too) to icu.events.v2, the events
of one stay released at one time in one message (an observation set; --one-per-message: one per message).
Ctrl-C stops cleanly: what was sent is flushed and a summary printed.

examples:
  medm2t replay --mimic data/mimic-iv --ecg data/mimic-iv-ecg --speed 120
  medm2t replay --physionet2012 ../shared/data/challenge-2012/set-a.tar.gz --limit 50 --speed max --mode recorded
"""
log = logging.getLogger("medm2t.replay")


def _speed(text: str) -> float | None:
    if text == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--speed takes a positive number or 'max', not {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError("--speed must be positive")
    return value


def _ids(text: str) -> set[int]:
    try:
        return {int(x) for x in text.replace(" ", "").split(",") if x}
    except ValueError:
        raise argparse.ArgumentTypeError(f"--stays takes comma-separated stay ids, not {text!r}") from None


def register(sub: argparse._SubParsersAction) -> None:
    from medm2t.cli import help_settings

    s = help_settings()
    from replay.sources import add_source_args

    p = sub.add_parser("replay", help="publish a data source to Kafka as a time-ordered stream", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_args(p)
    p.add_argument("--stays", type=_ids, metavar="IDS", help="only these stay ids (comma-separated)")
    p.add_argument("--limit", type=int, metavar="N", help="at most N stays")
    p.add_argument("--seed", type=int, default=0, help="seed of the ward's admission stagger and bed turnover (default 0)")
    p.add_argument("--mode", choices=("ward", "recorded"), default="ward", help="time model (default ward)")
    p.add_argument("--beds", type=int, default=24, help="ward beds kept occupied (default 24)")
    p.add_argument("--speed", type=_speed, default=_speed("60"), metavar="N|max", help="N x real time, or max (default 60)")
    p.add_argument("--start", type=datetime.fromisoformat, metavar="ISO",
                   help="ward mode: the simulated clock's start (default: now, to the minute); fixes times for reruns")
    p.add_argument("--kafka", metavar="HOST:PORT", help=f"Kafka bootstrap servers (default {s.kafka_url}, MEDM2T_KAFKA_URL)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--one-per-message", action="store_true",
                   help="send every event as its own Kafka message, as a v1 producer does (default: the events of "
                        "one stay released at one time travel together, as one observation set)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError
    from medm2t.cli.worker import settings_from
    from medm2t.kafka import BrokerUnreachable
    from replay.engine import merge_recorded, merge_ward, select_stays
    from replay.producer import EventProducer
    from replay.sources import SourceError, open_source  # noqa: F401 - SourceError is a ValueError

    if args.limit is not None and args.limit < 1:
        raise UserError("--limit must be at least 1")
    if args.beds < 1:
        raise UserError("--beds must be at least 1")
    settings = settings_from(args)
    try:
        reader = open_source(args, progress=False)
    except (SourceError, ValueError, OSError) as exc:  # the readers' layout errors are ValueErrors naming the file
        raise UserError(str(exc)) from None
    try:
        producer = EventProducer(settings, one_per_message=args.one_per_message)
    except BrokerUnreachable as exc:
        raise UserError(str(exc)) from None

    stays = select_stays(reader.stays(), args.stays, args.limit)
    if args.mode == "ward":
        start = args.start or datetime.now().replace(second=0, microsecond=0)
        stream = merge_ward(stays, args.beds, start, seed=args.seed)
    else:
        stream = merge_recorded(stays)
    started = time.monotonic()
    counts, seen_stays, interrupted, failure = _publish(stream, producer, args)
    _summary(reader, producer, counts, seen_stays, interrupted, time.monotonic() - started)
    if failure:
        raise UserError(failure)
    if producer.failed:
        raise UserError(f"{producer.failed_events} events in {len(producer.failed)} messages could not be published "
                        f"(first: {producer.failed[0]})")
    return 130 if interrupted else 0


def _publish(stream, producer, args: argparse.Namespace) -> tuple[Counter, set[int], bool, str | None]:
    """Send the stream at its pace; returns the events sent by kind, the stays seen, whether it was
    interrupted (Ctrl-C, SIGTERM) and why reading the source failed, if it did."""
    from tqdm import tqdm

    from replay.engine import Pacer, by_message

    pacer = Pacer(args.speed)
    counts: Counter = Counter()
    seen_stays: set[int] = set()
    interrupted, failure = False, None
    bar = tqdm(unit="ev", desc="replay", disable=args.no_progress, dynamic_ncols=True, smoothing=0.1)
    try:
        for at, events in by_message(stream):
            pacer.wait_until(at)
            producer.send(events)
            counts.update(e.kind for e in events)
            seen_stays.add(events[0].stay_id)
            before = bar.n
            bar.update(len(events))
            if bar.n // 500 > before // 500:
                bar.set_postfix_str(f"{len(seen_stays)} stays, clock {at:%Y-%m-%d %H:%M}", refresh=False)
    except KeyboardInterrupt:
        interrupted = True
    except (ValueError, OSError) as exc:  # a source file unreadable mid-way: stop cleanly, keep what was sent
        failure = f"reading the source failed: {exc}"
    finally:
        bar.close()
        try:
            producer.close()
        except KeyboardInterrupt:
            interrupted = True
    return counts, seen_stays, interrupted, failure


def _summary(reader, producer, counts: Counter, seen_stays: set[int], interrupted: bool, elapsed: float) -> None:
    total = sum(counts.values())
    for warning in reader.warnings[:20]:
        print(f"warning: {warning}")
    if len(reader.warnings) > 20:
        print(f"... and {len(reader.warnings) - 20} more reader warnings")
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
    print(f"{'interrupted: ' if interrupted else ''}replayed {len(seen_stays)} stays, {total} events ({kinds}) "
          f"in {elapsed:.1f} s ({total / elapsed if elapsed else 0:.0f} events/s); "
          f"acknowledged {sum(producer.sent.values())} in {producer.messages} messages "
          f"({sum(producer.sent.values()) / max(1, producer.messages):.2f} events per message), "
          f"failed {producer.failed_events}")
