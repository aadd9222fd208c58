"""Session-wide real services: a tansu Kafka-protocol broker and a Redis, started with the project's own
stack code on free ports, and the shared data folder."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers.paths import SHARED_DATA
from tests.helpers.processes import running_worker


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


@pytest.fixture(scope="module")
def worker_process(pipeline_settings):
    """The NEWS2-only worker on pipeline_settings, shared by one test module."""
    log = pipeline_settings.run_dir / "worker.log"
    with running_worker(pipeline_settings, log) as proc:
        yield proc, log
