"""`medm2t stack up|status|down` as a user runs it: real processes on free ports, a private run dir."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time

import pytest

from medm2t.settings import safe_url
from stream.services import free_port, port_in_use
from tests.helpers.paths import MEDM2T

pytestmark = pytest.mark.integration


def _stack(action, run_dir, *extra, timeout=60):
    env = {**os.environ, "MEDM2T_RUN_DIR": str(run_dir)}
    return subprocess.run([MEDM2T, "stack", action, *extra], env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_up_status_down_on_chosen_ports(tmp_path):
    kport, rport = free_port(), free_port()
    ports = ("--kafka-port", str(kport), "--redis-port", str(rport))
    try:
        up = _stack("up", tmp_path, *ports)
        assert up.returncode == 0, up.stderr
        assert "topic icu.events.v2: created" in up.stdout
        assert f"MEDM2T_KAFKA_URL=127.0.0.1:{kport}" in up.stdout  # non-default ports: tell the user what to export
        assert (tmp_path / "kafka.pid").exists() and (tmp_path / "redis.pid").exists()

        again = _stack("up", tmp_path, *ports)  # idempotent: reuses what runs, topics already there
        assert again.returncode == 0 and "already running" in again.stdout and "exists (6 partitions)" in again.stdout

        status = _stack("status", tmp_path, *ports)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "risk.alerts.v1: 6 partitions" in status.stdout
    finally:
        down = _stack("down", tmp_path, *ports)
    assert down.returncode == 0 and "kafka: stopped" in down.stdout and "redis: stopped" in down.stdout
    assert not port_in_use(kport) and not port_in_use(rport)
    status = _stack("status", tmp_path, *ports)
    assert status.returncode == 1 and "DOWN" in status.stdout


def test_redis_requires_its_password_and_keeps_data_through_kill_9(tmp_path):
    """`up` generates the Redis password once (0600) where every command finds it; the AOF (fsync every
    second) keeps what was written more than a second before a kill -9; `up --no-password` opts out."""
    import redis

    from medm2t.connections import redis_sync
    from medm2t.settings import RedisSettings, Settings

    kport, rport = free_port(), free_port()
    ports = ("--kafka-port", str(kport), "--redis-port", str(rport))
    settings = Settings(redis_url=f"redis://127.0.0.1:{rport}/0", run_dir=tmp_path, redis=RedisSettings(password=None))
    password_file = tmp_path / "redis.password"
    try:
        up = _stack("up", tmp_path, *ports)
        assert up.returncode == 0, up.stderr
        assert f"password in {password_file}" in up.stdout
        assert password_file.stat().st_mode & 0o777 == 0o600
        password = password_file.read_text().strip()
        assert password and password not in up.stdout + up.stderr
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=rport).ping()
        client = redis_sync(settings)  # finds the password in RUN_DIR by itself
        client.set("medm2t:test:kept", "yes")
        client.close()
        time.sleep(1.5)  # > one appendfsync everysec period
        os.kill(int((tmp_path / "redis.pid").read_text()), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while port_in_use(rport) and time.monotonic() < deadline:
            time.sleep(0.1)

        again = _stack("up", tmp_path, *ports)
        assert again.returncode == 0, again.stderr
        assert "redis: started" in again.stdout and password_file.read_text().strip() == password  # kept, not new
        assert redis_sync(settings).get("medm2t:test:kept") == b"yes"
        status = _stack("status", tmp_path, *ports)
        assert status.returncode == 0 and f"redis redis://127.0.0.1:{rport}/0: ok" in status.stdout

        assert _stack("down", tmp_path, *ports).returncode == 0
        open_up = _stack("up", tmp_path, *ports, "--no-password")
        assert open_up.returncode == 0 and "no password" in open_up.stdout and not password_file.exists()
        assert redis.Redis(port=rport).get("medm2t:test:kept") == b"yes"
    finally:
        _stack("down", tmp_path, *ports)


def test_port_in_use_is_reported_with_how_to_choose_another(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        busy = s.getsockname()[1]
        up = _stack("up", tmp_path, "--kafka-port", str(free_port()), "--redis-port", str(busy))
    _stack("down", tmp_path)
    assert up.returncode == 2
    assert f"port {busy} for redis is already in use" in up.stderr and "--redis-port" in up.stderr
    assert "Traceback" not in up.stderr


def test_down_without_up_stops_nothing(tmp_path):
    down = _stack("down", tmp_path)
    assert down.returncode == 0 and "kafka: not running" in down.stdout


def test_external_services_only_get_topics(tmp_path, kafka_bootstrap, redis_url):
    up = _stack("up", tmp_path, "--kafka", kafka_bootstrap, "--redis", redis_url)
    assert up.returncode == 0, up.stderr
    assert "started" not in up.stdout and "topic icu.deadletter.v1:" in up.stdout
    assert not (tmp_path / "kafka.pid").exists()
    status = _stack("status", tmp_path, "--kafka", kafka_bootstrap, "--redis", redis_url)
    assert status.returncode == 0 and "redis " + safe_url(redis_url) + ": ok" in status.stdout
    assert redis_url.split("@")[0].split(":")[-1] not in status.stdout + up.stdout  # the password is never printed


def test_help_shows_the_default_values_with_passwords_masked():
    """--help names the value a flag defaults to (from the settings and environment), not a code path, and
    never shows a Redis password."""
    env = {**os.environ, "MEDM2T_KAFKA_URL": "10.1.2.3:9093", "MEDM2T_REDIS_URL": "redis://:s3cret-pw@10.1.2.3:6380/0"}
    for command in ("worker", "replay", "alerts"):
        out = subprocess.run([MEDM2T, command, "--help"], capture_output=True, text=True, env=env, timeout=60)
        assert out.returncode == 0, out.stderr
        flat = " ".join(out.stdout.split())
        assert "settings." not in flat and "10.1.2.3:9093" in flat, (command, flat)
    worker = " ".join(subprocess.run([MEDM2T, "worker", "--help"], capture_output=True, text=True, env=env,
                                     timeout=60).stdout.split())
    assert "redis://:***@10.1.2.3:6380/0" in worker and "s3cret-pw" not in worker
    train = " ".join(subprocess.run([MEDM2T, "train", "--help"], capture_output=True, text=True, timeout=60).stdout.split())
    assert "self-contained checkpoint folder" in train
    assert "seed of the weights" in train and "per training step" in train


def test_dashboard_on_a_busy_port_fails_before_announcing_itself():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = subprocess.run([MEDM2T, "dashboard", "--port", str(port)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2, out.stderr
    assert "already in use" in out.stderr and "--port" in out.stderr, out.stderr
    assert "dashboard on http" not in out.stderr, out.stderr
