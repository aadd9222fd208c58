"""`medm2t demo`: the whole pipeline on the synthetic cohort, in one command."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HELP = """Run everything on the embedded synthetic cohort:

  1. the local broker and Redis (reused if they already answer at MEDM2T_KAFKA_URL / MEDM2T_REDIS_URL),
  2. a synthetic cohort of --stays stays, generated once and cached under MEDM2T_DATA_DIR (.medm2t/data),
     with every stay's course compressed to --time-scale (0.2: mean ICU stay 0.8 d instead of 4 d, and the
     hospital stay after it as much shorter) so that outcomes, and with them the Quality page's figures,
     arrive within the first minutes instead of after hours,
  3. `medm2t worker`,
  4. `medm2t replay` in ward mode (--beds beds at --speed x real time: at 180x an hour passes in 20 s),
  5. `medm2t dashboard` on http://127.0.0.1:8501.

MedM2T's demo checkpoint was trained on uncompressed stays: on the compressed demo cohort its ICU length-of-stay
predictions run long. Use --time-scale 1 for the cohort the checkpoint was trained and validated on.

Logs go to MEDM2T_RUN_DIR (.medm2t/run)/demo-*.log. Ctrl-C stops everything the demo started (services it
found running are left alone).
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="stack + synthetic cohort + worker + ward replay + dashboard", description=HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--stays", type=int, default=200, help="synthetic stays (default 200)")
    p.add_argument("--beds", type=int, default=24, help="ward beds (default 24)")
    p.add_argument("--speed", default="180", help="replay speed, N x real time or max (default 180)")
    p.add_argument("--time-scale", type=float, default=0.2, metavar="F",
                   help="compress every synthetic stay to F of its length (default 0.2; 1 = as trained)")
    p.add_argument("--port", type=int, help="dashboard port (default: MEDM2T_DASHBOARD_PORT, else 8501)")
    p.add_argument("--no-dashboard", action="store_true", help="do not start the dashboard")
    p.set_defaults(handler=_run)


def _medm2t() -> str:
    script = Path(sys.executable).parent / "medm2t"
    return str(script) if script.exists() else "medm2t"


class Children:
    """Child processes, each in its own process group, all stopped on exit."""

    def __init__(self, log_dir: Path, env: dict):
        self.log_dir, self.env, self.procs = log_dir, env, {}

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.log_dir / f"demo-{name}.log", "ab")
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def stop_all(self, timeout: float = 15.0) -> None:
        from stream.services import stop_process_group

        for name, proc in reversed(list(self.procs.items())):
            stop_process_group(proc, timeout)
            print(f"stopped {name}")


def _reachable(settings) -> tuple[bool, bool]:
    import redis

    from medm2t.cli import UserError
    from medm2t.connections import redis_error_message, redis_sync
    from medm2t.kafka import BrokerUnreachable, topic_partitions

    try:
        redis_ok = bool(redis_sync(settings, socket_connect_timeout=1).ping())
    except redis.AuthenticationError as exc:  # a Redis answers, but not to us: starting another one cannot help
        raise UserError(redis_error_message(settings, exc)) from None
    except redis.RedisError:
        redis_ok = False
    try:
        topic_partitions(settings, attempts=1)
        kafka_ok = True
    except BrokerUnreachable:
        kafka_ok = False
    return kafka_ok, redis_ok


def _services(settings, started: list) -> None:
    """Reuse a running broker and Redis, or start the embedded ones (appended to `started`); then the topics."""
    from medm2t.cli import UserError
    from medm2t.connections import stack_redis_password
    from medm2t.kafka import BrokerUnreachable, ensure_topics
    from stream.services import ServiceError, kafka_service, redis_service

    kafka_ok, redis_ok = _reachable(settings)
    for ok, name in ((kafka_ok, "kafka"), (redis_ok, "redis")):
        if ok:
            print(f"{name}: reusing the running service")
            continue
        # The demo's own Redis is memory only (each demo replays the same events afresh) and has the local
        # stack's password, which the worker, replay and dashboard find in RUN_DIR/redis.password.
        svc = (kafka_service(settings.kafka_port, settings.run_dir) if name == "kafka" else
               redis_service(settings.redis_port, settings.run_dir, stack_redis_password(settings), persist=False))
        try:
            svc.start()
        except ServiceError as exc:
            raise UserError(f"{exc} (or point the demo at running services with MEDM2T_KAFKA_URL / MEDM2T_REDIS_URL)") from None
        started.append(svc)
        print(f"{svc.name}: started on 127.0.0.1:{svc.port} (log {svc.log})")
    try:
        ensure_topics(settings)
    except BrokerUnreachable as exc:
        raise UserError(str(exc)) from None


def _cohort(settings, args: argparse.Namespace) -> Path:
    """The demo's synthetic cohort, generated once into the data folder."""
    from medm2t.cli import UserError

    cohort = settings.data_dir / (f"synth-{args.stays}" + ("" if args.time_scale == 1 else f"-x{args.time_scale:g}"))
    if (cohort / "mimic-iv" / "icu" / "icustays.csv.gz").exists():
        print(f"cohort: reusing {cohort}")
        return cohort
    print(f"generating the synthetic cohort ({args.stays} stays, time scale {args.time_scale:g}) in {cohort} (once) ...")
    done = subprocess.run([_medm2t(), "synth", "--stays", str(args.stays), "--seed", "0", "--out", str(cohort),
                           "--time-scale", str(args.time_scale)])
    if done.returncode != 0:
        raise UserError(f"`medm2t synth` failed (exit {done.returncode})")
    return cohort


def _run(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError
    from medm2t.settings import get_settings

    settings = get_settings()
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    started_services = []
    children = Children(settings.run_dir, {**os.environ, "MEDM2T_KAFKA_URL": settings.kafka_url,
                                           "MEDM2T_REDIS_URL": settings.redis_url})
    try:
        _services(settings, started_services)
        cohort = _cohort(settings, args)
        children.start("worker", [_medm2t(), "worker"])
        children.start("replay", [_medm2t(), "replay", "--mimic", str(cohort / "mimic-iv"), "--ecg",
                                  str(cohort / "mimic-iv-ecg"), "--mode", "ward", "--beds", str(args.beds),
                                  "--speed", str(args.speed), "--no-progress"])
        port = args.port or settings.dashboard_port
        if not args.no_dashboard:
            children.start("dashboard", [_medm2t(), "dashboard", "--port", str(port)])
        print(f"\nrunning: worker, replay ({args.beds} beds at {args.speed}x, stays compressed to "
              f"{args.time_scale:g} of their length)"
              + ("" if args.no_dashboard else f", dashboard at http://127.0.0.1:{port}"))
        print(f"logs: {settings.run_dir.resolve()}/demo-*.log   alerts: medm2t alerts --follow   Ctrl-C stops it all\n")
        replay_reported = False
        while True:
            time.sleep(1.0)
            for name, proc in children.procs.items():
                code = proc.poll()
                if code is None:
                    continue
                if name == "replay":
                    if not replay_reported:
                        print(f"replay finished (exit {code}); the worker and dashboard keep running. Ctrl-C to stop.")
                        replay_reported = True
                    continue
                raise UserError(f"{name} exited with code {code}; see {settings.run_dir / f'demo-{name}.log'}")
    except KeyboardInterrupt:
        print("\nstopping ...")
        return 0
    finally:
        children.stop_all()
        for svc in started_services:
            svc.stop()
            print(f"stopped {svc.name}")
