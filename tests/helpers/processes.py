"""`medm2t` subprocesses on the session services (tests/conftest.py's pipeline_settings): the environment that
points one at them, and a worker run for the length of a `with`."""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

from tests.helpers.paths import MEDM2T


def service_env(settings) -> dict:
    """The environment that gives a medm2t subprocess these settings (services, Redis password and cluster mode)."""
    import os

    env = {**os.environ, "MEDM2T_KAFKA_URL": settings.kafka_url, "MEDM2T_REDIS_URL": settings.redis_url,
           "MEDM2T_RUN_DIR": str(settings.run_dir), "MEDM2T_SCORERS": settings.scorers,
           "MEDM2T_CHECKPOINT": str(settings.checkpoint),
           "MEDM2T_DEVICE": settings.device}
    if settings.redis.password is not None:
        env["MEDM2T_REDIS_PASSWORD"] = settings.redis.password.get_secret_value()
    if settings.redis.cluster:
        env["MEDM2T_REDIS_CLUSTER"] = "1"
    return env


@contextmanager
def running_worker(settings, log: Path, *args: str, **extra_env):
    """`medm2t worker ARGS` as a subprocess in its own process group, stopped (and waited for) on exit."""
    import subprocess

    from stream.services import stop_process_group

    with open(log, "ab") as out:
        proc = subprocess.Popen([MEDM2T, "worker", *args], env={**service_env(settings), **extra_env},
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop_process_group(proc, timeout=20)
