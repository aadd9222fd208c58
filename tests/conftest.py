"""Session-wide real services: a tansu Kafka-protocol broker and a Redis, started with the project's own
stack code on free ports, and the shared data folder."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent (it sits beside the repo on developer machines and CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def services_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def redis_url(services_dir):
    from stream.services import free_port, redis_service

    svc = redis_service(free_port(), services_dir)
    svc.start()
    yield f"redis://127.0.0.1:{svc.port}/0"
    svc.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap(services_dir):
    from stream.services import free_port, kafka_service

    svc = kafka_service(free_port(), services_dir)
    svc.start()
    yield f"127.0.0.1:{svc.port}"
    svc.stop()
