"""`medm2t stack up|status|down` as a user runs it: real processes on free ports, a private run dir."""
from __future__ import annotations

import os
import socket
import subprocess

import pytest

from conftest import MEDM2T
from stream.services import free_port, port_in_use

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
        assert "topic icu.events.v1: created" in up.stdout
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
    assert status.returncode == 0 and "redis " + redis_url + ": ok" in status.stdout
