"""`medm2t` command line, the top of the stack core (medm2t/) <- replay <- model <- stream <- dashboard <- CLI:
it may import every layer and no layer imports it. Each subcommand lives in its own module in this package
(medm2t/cli/) and registers itself through `register(subparsers)`, setting its `handler` with set_defaults;
modules without `register` are helpers of the others. Heavy imports happen inside the handlers so that
`medm2t --help` stays fast."""
from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import signal
import sys

DESCRIPTION = """Streaming bedside ICU risk monitor built around MedM2T.

Typical session:
  medm2t stack up                       # local Kafka-protocol broker + Redis
  medm2t synth --stays 200 --out data   # synthetic cohort in MIMIC-IV layout
  medm2t worker &                       # score stays as events arrive
  medm2t replay --mimic data/mimic-iv --ecg data/mimic-iv-ecg --speed 120
  medm2t dashboard                      # http://127.0.0.1:8501
Or all of it at once: medm2t demo
"""


class UserError(Exception):
    """An error the user can fix: printed as one clear line, no traceback."""


SETTINGS_MODELS = {"Settings": "MEDM2T_", "KafkaSettings": "MEDM2T_KAFKA_", "RedisSettings": "MEDM2T_REDIS_"}


def help_settings():
    """The settings whose values --help shows as defaults: the environment's, or the built-in defaults when
    the environment holds a bad value. A bad value must not hide --help; a command that runs reports it."""
    from pydantic import ValidationError

    from medm2t.settings import Settings, get_settings

    try:
        return get_settings()
    except ValidationError:
        return Settings.model_construct()


def _env_name(model: str, loc: tuple) -> str:
    return (SETTINGS_MODELS[model] + "_".join(str(p) for p in loc)).upper()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medm2t", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from pydantic import ValidationError

    try:
        return _main(argv)
    except ValidationError as exc:
        if exc.title not in SETTINGS_MODELS:  # a bug elsewhere: keep its traceback
            raise
        bad = "; ".join(f"{_env_name(exc.title, e['loc'])}: {e['msg']}" for e in exc.errors())
        print(f"medm2t: error: invalid setting: {bad}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    from medm2t.connections import ConnectionSettingsError

    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.handler(args) or 0)
    except (UserError, ConnectionSettingsError) as exc:
        print(f"medm2t: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medm2t: interrupted", file=sys.stderr)
        return 130


def _interrupt(signum, frame):
    """SIGTERM (service managers, `medm2t demo`, `kill`) stops a command as Ctrl-C does, so that the services
    and child processes it started are stopped on the way out. Commands that run an event loop (the worker)
    or become another program (the dashboard) install their own handlers over this one."""
    raise KeyboardInterrupt

