"""`medm2t dashboard`: the Streamlit ward monitor, reading Redis only."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

DESCRIPTION = """Serve the live ward monitor (Streamlit) at http://HOST:PORT.

It reads the state the worker keeps in Redis (it never reads Kafka): a ward board sorted by risk,
a patient page (score trajectories, vitals, labs, 12-lead ECG), the alert feed and a system page.
The page refreshes itself every MEDM2T_DASHBOARD_REFRESH_S seconds. If Redis is not reachable the
dashboard still starts, says so on the page and keeps retrying.
"""


def register(sub: argparse._SubParsersAction) -> None:
    from medm2t.cli import help_settings

    s = help_settings()
    p = sub.add_parser("dashboard", help="serve the live ward monitor (Streamlit) that reads Redis",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=s.dashboard_port, help="port to serve on (default %(default)s, MEDM2T_DASHBOARD_PORT)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default %(default)s: this machine only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--redis", default=None, metavar="URL",
                   help="Redis URL, redis:// or rediss:// (default: MEDM2T_REDIS_URL, else the settings default)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from medm2t.cli import UserError
    from medm2t.settings import get_settings, safe_url, with_overrides

    url = args.redis or get_settings().redis_url
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise UserError(f"--redis {url!r} is not a Redis URL (expected redis://host:port/db or rediss://...)")
    if not 0 < args.port < 65536:
        raise UserError(f"--port {args.port} is not a valid TCP port")
    from stream.services import port_in_use

    if port_in_use(args.port, args.host if args.host not in ("0.0.0.0", "::") else "127.0.0.1"):
        raise UserError(f"port {args.port} on {args.host} is already in use (another dashboard?); stop it or "
                        f"choose another with --port or MEDM2T_DASHBOARD_PORT")
    import dashboard
    from dashboard.data import connect

    app = Path(dashboard.__file__).resolve().parent / "app.py"
    if not app.exists():
        raise UserError(f"dashboard app not found at {app}; reinstall the package (pip install -e .)")

    from redis import RedisError

    from medm2t.connections import redis_error_message

    try:
        connect(url).ping()
    except RedisError as exc:  # says where a rejected password came from, or how to start Redis
        problem = redis_error_message(with_overrides(get_settings(), redis_url=url), exc)
        print(f"medm2t: warning: {problem}. The dashboard starts anyway, shows this on the page and keeps "
              "retrying.", file=sys.stderr)
    print(f"medm2t: dashboard on http://{args.host}:{args.port} (Redis {safe_url(url)}); Ctrl-C stops it.", file=sys.stderr)
    env = {**os.environ, "MEDM2T_REDIS_URL": url}
    argv = [sys.executable, "-m", "streamlit", "run", str(app),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.address", args.host, "--server.port", str(args.port),
            # No file watcher: a deployed monitor does not hot-reload, and watching costs CPU and inotify handles.
            "--server.fileWatcherType", "none", "--server.runOnSave", "false", "--client.toolbarMode", "viewer"]
    sys.stdout.flush()
    sys.stderr.flush()
    # Replace this process so that signals (Ctrl-C, SIGTERM from a supervisor) reach Streamlit directly.
    os.execve(sys.executable, argv, env)
    return 0  # pragma: no cover - execve does not return
