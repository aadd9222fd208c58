import socket

import pytest

from stream.services import ServiceError, free_port, redis_service


def test_redis_and_kafka_fixtures_answer_on_their_ports(redis_url, kafka_bootstrap):
    import redis

    assert redis.Redis.from_url(redis_url).ping()
    host, port = kafka_bootstrap.split(":")
    with socket.create_connection((host, int(port)), timeout=2):
        pass


def test_port_in_use_is_reported_not_fought_over(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(ServiceError, match=f"port {port} .* already in use"):
            redis_service(port, tmp_path).start()


def test_stop_only_stops_what_we_started(tmp_path):
    svc = redis_service(free_port(), tmp_path)
    assert svc.stop() is False  # nothing started, nothing stopped
    svc.start()
    assert svc.pid() is not None
    assert svc.stop() is True
    assert svc.pid() is None
