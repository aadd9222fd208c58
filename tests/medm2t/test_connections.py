"""medm2t.connections: the one mapping from settings to Kafka and Redis clients.

Redis AUTH runs against the session Redis, which requires a password (tests/conftest.py starts it the way
`medm2t stack up` does). Kafka SASL/SSL is checked as a mapping only: the local tansu broker has no SASL.
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from pydantic import ValidationError

from medm2t.connections import (ConnectionSettingsError, bootstrap_servers, compression_type, faust_options,
                                kafka_python_options, redis_async, redis_error_message, redis_password_file,
                                redis_password_source, redis_sync, stack_redis_password)
from medm2t.settings import KafkaSettings, RedisSettings, Settings, safe_url

SECRET = "s3cret-do-not-print"
CAFILE = Path(ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt")


@pytest.fixture(autouse=True)
def no_connection_env(monkeypatch):
    """The developer's own MEDM2T_KAFKA_* / MEDM2T_REDIS_* must not leak into these settings."""
    for name in list(os.environ):
        if name.startswith(("MEDM2T_KAFKA_", "MEDM2T_REDIS_")):
            monkeypatch.delenv(name)


def bare(url: str) -> str:
    """The URL without its password."""
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.hostname}:{parts.port}").geturl()


def redis_settings(url: str, tmp_path: Path, password: str | None = None) -> Settings:
    return Settings(redis_url=url, run_dir=tmp_path, redis=RedisSettings(password=password))


def ping_async(settings: Settings, **overrides) -> bool:
    async def go():
        client = redis_async(settings, **overrides)
        try:
            return await client.ping()
        finally:
            await client.aclose()

    return asyncio.run(go())


# ---------------------------------------------------------------- Redis AUTH against a real Redis ---------


@pytest.mark.integration
def test_right_password_works_sync_and_async_from_url_setting_or_file(redis_url, redis_password, tmp_path):
    in_url = redis_settings(redis_url, tmp_path)
    assert redis_password_source(in_url) == "the URL"
    assert redis_sync(in_url).ping() and ping_async(in_url)

    from_setting = redis_settings(bare(redis_url), tmp_path, password=redis_password)
    assert redis_password_source(from_setting) == "MEDM2T_REDIS_PASSWORD"
    assert redis_sync(from_setting).ping() and ping_async(from_setting)

    redis_password_file(from_setting).write_text(redis_password + "\n")  # what `medm2t stack up` leaves
    from_file = redis_settings(bare(redis_url), tmp_path)
    assert redis_password_source(from_file) == str(tmp_path / "redis.password")
    assert redis_sync(from_file).ping() and ping_async(from_file)


@pytest.mark.integration
def test_missing_password_is_a_clear_error(redis_url, tmp_path):
    none = redis_settings(bare(redis_url), tmp_path, password="")  # set empty: send none
    assert redis_password_source(none) == "none"
    for attempt in (lambda: redis_sync(none).ping(), lambda: ping_async(none)):
        with pytest.raises(redis.AuthenticationError) as caught:
            attempt()
        message = redis_error_message(none, caught.value)
        assert "requires a password" in message and "MEDM2T_REDIS_PASSWORD" in message
        assert "redis.password" in message


@pytest.mark.integration
def test_wrong_password_fails_at_once_with_a_clear_error(redis_url, tmp_path):
    wrong = redis_settings(bare(redis_url), tmp_path, password=SECRET)
    with pytest.raises(redis.AuthenticationError) as caught:
        redis_sync(wrong).ping()
    message = redis_error_message(wrong, caught.value)
    assert "rejected the password from MEDM2T_REDIS_PASSWORD" in message and SECRET not in message

    start = time.monotonic()
    with pytest.raises(redis.AuthenticationError):
        ping_async(wrong)  # the async client retries connection errors, but not a rejected password
    assert time.monotonic() - start < 3.0


@pytest.mark.integration
def test_unreachable_redis_names_the_fix(tmp_path):
    from stream.services import free_port

    down = redis_settings(f"redis://:{SECRET}@127.0.0.1:{free_port()}/0", tmp_path)
    with pytest.raises(redis.ConnectionError) as caught:
        redis_sync(down, socket_connect_timeout=0.5, retry=None).ping()
    message = redis_error_message(down, caught.value)
    assert "Redis at redis://:***@127.0.0.1" in message and "is not reachable" in message
    assert "medm2t stack up" in message
    assert SECRET not in message


@pytest.mark.integration
def test_local_redis_takes_its_password_from_stdin_never_argv(tmp_path):
    from stream.services import free_port, redis_service

    svc = redis_service(free_port(), tmp_path, password=SECRET)
    assert SECRET not in " ".join(svc.argv) and SECRET not in repr(svc)
    assert "--appendonly" in svc.argv and svc.argv[svc.argv.index("--appendfsync") + 1] == "everysec"
    svc.start()
    try:
        cmdline = Path(f"/proc/{svc.pid()}/cmdline").read_bytes() if Path("/proc").is_dir() else b""
        assert SECRET.encode() not in cmdline
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=svc.port).ping()
        client = redis.Redis(port=svc.port, password=SECRET)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert Path(client.config_get("dir")["dir"]) == (tmp_path / "redis-data").resolve()
        client.close()
    finally:
        svc.stop()


# ---------------------------------------------------------------- the password file and its fallback ------


def test_stack_password_is_generated_once_private_and_found_by_local_urls_only(tmp_path):
    local = redis_settings("redis://127.0.0.1:6379/0", tmp_path)
    assert redis_password_source(local) == "none"
    first = stack_redis_password(local)
    path = tmp_path / "redis.password"
    assert len(first) >= 32 and path.read_text().strip() == first
    assert path.stat().st_mode & 0o777 == 0o600
    assert stack_redis_password(local) == first  # kept, not regenerated
    assert redis_password_source(local) == str(path)
    assert redis_password_source(redis_settings("redis://localhost:16379/2", tmp_path)) == str(path)
    # never sent to another host, and never over a URL that has its own
    assert redis_password_source(redis_settings("redis://cache.example:6379/0", tmp_path)) == "none"
    assert redis_password_source(redis_settings("redis://:pw@127.0.0.1:6379/0", tmp_path)) == "the URL"
    # MEDM2T_REDIS_PASSWORD wins, and set empty means none at all
    assert stack_redis_password(redis_settings("redis://127.0.0.1/0", tmp_path, password="chosen")) == "chosen"
    assert stack_redis_password(redis_settings("redis://127.0.0.1/0", tmp_path, password="")) is None
    assert redis_password_source(redis_settings("redis://127.0.0.1/0", tmp_path, password="")) == "none"


def test_environment_names_are_kept(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDM2T_KAFKA_URL", "k1:9092,k2:9092")
    monkeypatch.setenv("MEDM2T_REDIS_URL", "rediss://cache.example:6380/1")
    monkeypatch.setenv("MEDM2T_REDIS_PASSWORD", SECRET)
    monkeypatch.setenv("MEDM2T_KAFKA_SECURITY_PROTOCOL", "sasl_ssl")
    monkeypatch.setenv("MEDM2T_KAFKA_SASL_MECHANISM", "scram-sha-256")
    monkeypatch.setenv("MEDM2T_KAFKA_SASL_USERNAME", "monitor")
    monkeypatch.setenv("MEDM2T_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("MEDM2T_KAFKA_SSL_CAFILE", str(CAFILE))
    s = Settings()
    assert (s.kafka_url, s.redis_url) == ("k1:9092,k2:9092", "rediss://cache.example:6380/1")
    assert s.redis.password.get_secret_value() == SECRET and s.kafka.sasl_password.get_secret_value() == SECRET
    assert (s.kafka.security_protocol, s.kafka.sasl_mechanism, s.kafka.sasl_username) == ("SASL_SSL", "SCRAM-SHA-256", "monitor")
    assert s.kafka.ssl_cafile == CAFILE
    # commands and tests override the addresses by copy
    assert s.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}).redis_url == "redis://127.0.0.1:1/0"
    monkeypatch.setenv("MEDM2T_KAFKA_SECURITY_PROTOCOL", "SASL")
    with pytest.raises(ValidationError):
        Settings()


def test_a_bad_setting_is_one_line_not_a_traceback(monkeypatch, capsys):
    from medm2t.cli import main
    from medm2t.settings import get_settings

    monkeypatch.setenv("MEDM2T_KAFKA_SECURITY_PROTOCOL", "TLS")
    get_settings.cache_clear()
    try:
        assert main(["stack", "status"]) == 2
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "invalid setting: MEDM2T_KAFKA_SECURITY_PROTOCOL" in err and "Traceback" not in err


# ---------------------------------------------------------------- Kafka mapping (unit) --------------------


def kafka(protocol="PLAINTEXT", **fields) -> Settings:
    return Settings(kafka_url=fields.pop("url", "b1:9092"), kafka=KafkaSettings(security_protocol=protocol, **fields))


def test_bootstrap_list_is_parsed_once_for_every_client():
    s = kafka(url=" b1:9092 , kafka://b2:9093,, tcp://b3:9094/ ")
    assert bootstrap_servers(s) == ["b1:9092", "b2:9093", "b3:9094"]
    assert kafka_python_options(s)["bootstrap_servers"] == ["b1:9092", "b2:9093", "b3:9094"]
    assert faust_options(s)["broker"] == ["kafka://b1:9092", "kafka://b2:9093", "kafka://b3:9094"]
    with pytest.raises(ConnectionSettingsError, match="no Kafka bootstrap server"):
        bootstrap_servers(kafka(url=" , "))


def test_plaintext_has_no_credentials():
    s = kafka()
    assert kafka_python_options(s) == {"bootstrap_servers": ["b1:9092"], "security_protocol": "PLAINTEXT"}
    assert faust_options(s) == {"broker": ["kafka://b1:9092"], "broker_credentials": None,
                                "producer_compression_type": "lz4"}


def test_sasl_ssl_maps_to_kafka_python_and_faust():
    import faust

    s = kafka("SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="monitor", sasl_password=SECRET,
              ssl_cafile=CAFILE)
    opts = kafka_python_options(s)
    assert opts == {"bootstrap_servers": ["b1:9092"], "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                    "sasl_plain_username": "monitor", "sasl_plain_password": SECRET, "ssl_check_hostname": True,
                    "ssl_cafile": str(CAFILE)}
    creds = faust_options(s)["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password, creds.mechanism.value) == ("monitor", SECRET, "SCRAM-SHA-512")
    assert isinstance(creds.ssl_context, ssl.SSLContext) and creds.protocol.value == "SASL_SSL"
    assert SECRET not in repr(creds)


def test_sasl_plaintext_defaults_to_plain_without_tls():
    import faust

    s = kafka("SASL_PLAINTEXT", sasl_username="monitor", sasl_password=SECRET)
    opts = kafka_python_options(s)
    assert opts["sasl_mechanism"] == "PLAIN" and "ssl_cafile" not in opts and "ssl_check_hostname" not in opts
    creds = faust_options(s)["broker_credentials"]
    assert isinstance(creds, faust.SASLCredentials) and creds.ssl_context is None
    assert creds.mechanism.value == "PLAIN" and creds.protocol.value == "SASL_PLAINTEXT"


def test_ssl_only_maps_to_a_verified_context():
    import faust

    s = kafka("SSL", ssl_cafile=CAFILE)
    opts = kafka_python_options(s)
    assert opts["ssl_cafile"] == str(CAFILE) and "sasl_mechanism" not in opts
    creds = faust_options(s)["broker_credentials"]
    assert isinstance(creds, faust.SSLCredentials)
    assert creds.context.verify_mode == ssl.CERT_REQUIRED and creds.context.check_hostname


def test_impossible_kafka_settings_say_what_to_set(tmp_path):
    with pytest.raises(ConnectionSettingsError, match="MEDM2T_KAFKA_SASL_USERNAME"):
        kafka_python_options(kafka("SASL_SSL", sasl_password=SECRET))
    with pytest.raises(ConnectionSettingsError, match="MEDM2T_KAFKA_SASL_USERNAME"):
        faust_options(kafka("SASL_PLAINTEXT", sasl_username="monitor"))
    with pytest.raises(ConnectionSettingsError, match="MEDM2T_KAFKA_SSL_CAFILE"):
        kafka_python_options(kafka("SSL", ssl_cafile=tmp_path / "missing.pem"))


# ---------------------------------------------------------------- secrets are never shown -----------------


def test_secrets_never_appear_in_repr_dump_or_logs(caplog, tmp_path):
    s = Settings(redis_url=f"redis://:{SECRET}@cache.example:6379/0", run_dir=tmp_path,
                 kafka=KafkaSettings(security_protocol="SASL_SSL", sasl_username="monitor", sasl_password=SECRET),
                 redis=RedisSettings(password=SECRET))
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("medm2t.test").info("settings %s / %r / kafka %s", s, s, s.kafka)
    shown = [repr(s), str(s), repr(s.kafka), repr(s.redis), s.model_dump_json(), str(s.model_dump()), caplog.text]
    for text in shown:
        assert SECRET not in text
    assert "redis://:***@cache.example:6379/0" in repr(s)
    assert safe_url(s.redis_url) == "redis://:***@cache.example:6379/0"
    assert safe_url("redis://user:pw@[::1]:6379/0") == "redis://user:***@[::1]:6379/0"
    assert safe_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    # the secret is still there for the clients that need it
    assert s.kafka.sasl_password.get_secret_value() == SECRET
    assert kafka_python_options(s)["sasl_plain_password"] == SECRET


def test_kafka_python_checksums_records_in_c():
    """Without the `crc32c` package kafka-python computes every record batch's CRC-32C in Python: a replay ran
    at half speed (pyproject.toml installs kafka-python[crc32c])."""
    from kafka.record import util

    assert util.crc32c_c is not None and util._crc32c is util.crc32c_c


def test_producers_compress_as_configured_and_both_clients_have_the_codec():
    """MEDM2T_KAFKA_COMPRESSION is the codec of kafka-python's producers (medm2t.kafka.make_producer) and
    Faust's; lz4 (the default) needs the `lz4` package for kafka-python and `cramjam` for aiokafka, or a
    consumer could not read what the other wrote."""
    from aiokafka import codec as aiokafka_codec
    from kafka import codec as kafka_codec

    assert compression_type(kafka()) == "lz4" == faust_options(kafka())["producer_compression_type"]
    assert compression_type(kafka(compression="gzip")) == "gzip"
    assert compression_type(kafka(compression="none")) is None
    with pytest.raises(ValidationError):
        kafka(compression="brotli")
    assert kafka_codec.has_lz4() and aiokafka_codec.has_lz4()
