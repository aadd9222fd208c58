"""Session-wide real services: a tansu Kafka-protocol broker and a Redis, started with the project's own
stack code on free ports, and the shared data folder."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# The installed console script (`python -m medm2t` runs the same main).
MEDM2T = str(Path(sys.executable).parent / "medm2t")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (it sits beside the repo on developer machines and CI)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """Model tests use tiny tensors: one torch thread is fastest and avoids spin-waiting on a shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def redis_password() -> str:
    import secrets

    return secrets.token_urlsafe(16)


@pytest.fixture(scope="session")
def redis_url(services_dir, redis_password):
    """The session Redis, started like `medm2t stack up` starts it (AOF, a password): every client must AUTH,
    so the URL carries the password."""
    from stream.services import free_port, redis_service

    svc = redis_service(free_port(), services_dir, password=redis_password)
    svc.start()
    yield f"redis://:{redis_password}@127.0.0.1:{svc.port}/0"
    svc.stop()


DASHBOARD_APP = str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py")  # for Streamlit's AppTest
DASHBOARD_DB = 9  # a database of its own on the session Redis for the dashboard's AppTests, flushed per test


@pytest.fixture
def dash_redis(redis_url, monkeypatch):
    """An empty Redis database that the dashboard under test reads (MEDM2T_REDIS_URL points at it)."""
    import redis

    from medm2t.settings import get_settings

    url = redis_url.rsplit("/", 1)[0] + f"/{DASHBOARD_DB}"
    r = redis.Redis.from_url(url, decode_responses=True)
    r.flushdb()
    monkeypatch.setenv("MEDM2T_REDIS_URL", url)
    get_settings.cache_clear()
    yield r
    r.flushdb()
    r.close()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def kafka_bootstrap(services_dir):
    from stream.services import free_port, kafka_service

    svc = kafka_service(free_port(), services_dir)
    svc.start()
    yield f"127.0.0.1:{svc.port}"
    svc.stop()


@pytest.fixture(scope="session")
def pipeline_settings(kafka_bootstrap, redis_url, tmp_path_factory):
    """Settings pointing at the session services, with every topic created."""
    from medm2t.kafka import ensure_topics
    from medm2t.settings import Settings

    settings = Settings(kafka_url=kafka_bootstrap, redis_url=redis_url, run_dir=tmp_path_factory.mktemp("run"),
                        scorers="news2")
    ensure_topics(settings)
    return settings


@pytest.fixture(scope="session")
def synth_cohort(tmp_path_factory) -> Path:
    """A 30-stay synthetic cohort in MIMIC-IV layout (written once per session)."""
    from replay.synth import generate

    out = tmp_path_factory.mktemp("synth30")
    generate(30, 5, out, progress=False)  # seed 5: 5 deaths, for the alert-quality figures
    return out


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


@pytest.fixture(scope="module")
def worker_process(pipeline_settings):
    """The NEWS2-only worker on pipeline_settings, shared by one test module."""
    log = pipeline_settings.run_dir / "worker.log"
    with running_worker(pipeline_settings, log) as proc:
        yield proc, log
