"""Fixtures only the dashboard tests use."""
from __future__ import annotations

import pytest


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
