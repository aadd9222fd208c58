"""The one place where settings become Kafka and Redis clients.

Every client in the project (commands, worker, replay, dashboard, tests) is built from Settings through
these functions, so bootstrap parsing, SASL/SSL, the Redis password and the Redis timeouts are decided
once:

- `kafka_python_options(settings)`: keyword arguments for kafka-python's KafkaProducer/Consumer/AdminClient.
- `faust_options(settings)`: `broker`, `broker_credentials` and compression for `faust.App`; `set_fetch_max_wait`.
- `compression_type(settings)`: the codec every producer compresses record batches with.
- `redis_sync(settings, **overrides)` / `redis_async(settings, **overrides)`: redis.Redis /
  redis.asyncio.Redis clients, or their RedisCluster counterparts when MEDM2T_REDIS_CLUSTER is set.

The Redis password a client sends is, in this order: the one in the URL (`redis://:PASSWORD@host`),
MEDM2T_REDIS_PASSWORD (set empty: none), else, for a 127.0.0.1/localhost URL, the password that
`medm2t stack up` generated into RUN_DIR/redis.password. Secrets stay pydantic SecretStr until the moment
a client needs them, and nothing here logs them; `medm2t.settings.safe_url` masks a URL's password for
messages.
"""
from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from medm2t.settings import Settings, safe_url

REDIS_PASSWORD_FILE = "redis.password"
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ConnectionSettingsError(ValueError):
    """The connection settings cannot work (e.g. SASL without credentials); the message says which to set."""


# ---------------------------------------------------------------- Kafka ------------------------------------


def bootstrap_servers(settings: Settings) -> list[str]:
    """`host:port` entries of settings.kafka_url (comma separated; a `kafka://` or `tcp://` prefix is allowed)."""
    servers = []
    for part in settings.kafka_url.split(","):
        part = part.strip()
        for scheme in ("kafka://", "tcp://"):
            if part.startswith(scheme):
                part = part[len(scheme):]
        if part:
            servers.append(part.rstrip("/"))
    if not servers:
        raise ConnectionSettingsError(f"no Kafka bootstrap server in {settings.kafka_url!r} "
                                      "(expected host:port[,host:port] in MEDM2T_KAFKA_URL or --kafka)")
    return servers


def _sasl(settings: Settings) -> tuple[str, str, str] | None:
    """(mechanism, username, password) for a SASL protocol, None otherwise."""
    k = settings.kafka
    if not k.security_protocol.startswith("SASL"):
        return None
    if not k.sasl_username or k.sasl_password is None:
        raise ConnectionSettingsError(f"MEDM2T_KAFKA_SECURITY_PROTOCOL={k.security_protocol} needs "
                                      "MEDM2T_KAFKA_SASL_USERNAME and MEDM2T_KAFKA_SASL_PASSWORD")
    return k.sasl_mechanism or "PLAIN", k.sasl_username, k.sasl_password.get_secret_value()


def _uses_ssl(settings: Settings) -> bool:
    return settings.kafka.security_protocol in ("SSL", "SASL_SSL")


def _cafile(settings: Settings) -> str | None:
    cafile = settings.kafka.ssl_cafile
    if cafile is None:
        return None
    if not Path(cafile).is_file():
        raise ConnectionSettingsError(f"MEDM2T_KAFKA_SSL_CAFILE={cafile} is not a readable file")
    return str(cafile)


def kafka_python_options(settings: Settings) -> dict[str, Any]:
    """kafka-python connection options: bootstrap servers, security protocol, SASL credentials, CA file."""
    opts: dict[str, Any] = {"bootstrap_servers": bootstrap_servers(settings),
                            "security_protocol": settings.kafka.security_protocol}
    sasl = _sasl(settings)
    if sasl:
        opts.update(sasl_mechanism=sasl[0], sasl_plain_username=sasl[1], sasl_plain_password=sasl[2])
    if _uses_ssl(settings):
        opts["ssl_check_hostname"] = True
        cafile = _cafile(settings)
        if cafile:
            opts["ssl_cafile"] = cafile
    return opts


def compression_type(settings: Settings) -> str | None:
    """The codec producers compress record batches with (MEDM2T_KAFKA_COMPRESSION), None for none. The JSON
    of scores and FHIR resources shrinks 9-15-fold with lz4, and the in-memory local broker holds it all."""
    return None if settings.kafka.compression == "none" else settings.kafka.compression


def faust_options(settings: Settings) -> dict[str, Any]:
    """`broker` (kafka:// URLs), `broker_credentials` (faust SASL/SSL credentials, or None) and the producer's
    compression for faust.App."""
    broker = [f"kafka://{server}" for server in bootstrap_servers(settings)]
    credentials = None
    sasl = _sasl(settings)
    if sasl or _uses_ssl(settings):
        import ssl

        import faust

        context = ssl.create_default_context(cafile=_cafile(settings)) if _uses_ssl(settings) else None
        if sasl:
            credentials = faust.SASLCredentials(mechanism=sasl[0], username=sasl[1], password=sasl[2],
                                                ssl_context=context)
        else:
            credentials = faust.SSLCredentials(context)
    return {"broker": broker, "broker_credentials": credentials,
            "producer_compression_type": compression_type(settings)}


def set_fetch_max_wait(app, wait_ms: int) -> None:
    """Give a faust.App's consumer aiokafka's `fetch_max_wait_ms`, which faust-streaming hard-codes to 1,500
    (faust PR #281 to make it a setting was never merged). Call it before the app starts."""
    from faust.transport.drivers import aiokafka as driver

    class Thread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport):
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = wait_ms  # read when the consumer starts and builds its fetcher
            return consumer

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self):
            return Thread(self, loop=self.loop, beacon=self.beacon)

    app.transport.Consumer = Consumer


# ---------------------------------------------------------------- Redis ------------------------------------


def redis_password_file(settings: Settings) -> Path:
    """Where `medm2t stack up` keeps the local Redis password (RUN_DIR/redis.password, mode 0600)."""
    return Path(settings.run_dir) / REDIS_PASSWORD_FILE


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("redis", "rediss") and (parts.hostname or "") in _LOOPBACK


def redis_password_source(settings: Settings) -> str:
    """Where the password a Redis client sends comes from: 'the URL', 'MEDM2T_REDIS_PASSWORD', the password
    file's path, or 'none'."""
    if urlsplit(settings.redis_url).password:
        return "the URL"
    if settings.redis.password is not None:
        return "MEDM2T_REDIS_PASSWORD" if settings.redis.password.get_secret_value() else "none"
    path = redis_password_file(settings)
    if _is_local(settings.redis_url) and path.is_file():
        return str(path)
    return "none"


def _password_kwarg(settings: Settings) -> str | None:
    """The password to pass beside the URL (None when the URL carries its own, or there is none)."""
    source = redis_password_source(settings)
    if source in ("the URL", "none"):
        return None
    if source == "MEDM2T_REDIS_PASSWORD":
        return settings.redis.password.get_secret_value()
    return Path(source).read_text().strip() or None


def _redis_kwargs(settings: Settings, overrides: dict[str, Any]) -> dict[str, Any]:
    r = settings.redis
    kwargs: dict[str, Any] = {"socket_connect_timeout": r.connect_timeout_s, "socket_timeout": r.socket_timeout_s,
                              "socket_keepalive": True, "health_check_interval": r.health_check_interval_s}
    password = _password_kwarg(settings)
    if password:
        kwargs["password"] = password
    kwargs.update(overrides)
    return kwargs


def redis_sync(settings: Settings, **overrides):
    """A redis.Redis for settings.redis_url with the resolved password and the common timeouts; `overrides`
    (e.g. decode_responses=True, a shorter socket_connect_timeout) win."""
    import redis
    from redis.cluster import RedisCluster

    client = RedisCluster if settings.redis.cluster else redis.Redis
    return client.from_url(settings.redis_url, **_redis_kwargs(settings, overrides))


def redis_async(settings: Settings, **overrides):
    """A redis.asyncio.Redis like redis_sync, which also retries a command through a dropped connection or a
    timeout (exponential backoff capped at 5 s, 10 tries, about 13 s in all: a Redis restart). A rejected
    password is not retried: it fails at once."""
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError, TimeoutError

    defaults = {"retry": _retry_except_auth()(ExponentialBackoff(cap=5), 10),
                "retry_on_error": [ConnectionError, TimeoutError]}
    client = RedisCluster if settings.redis.cluster else Redis
    return client.from_url(settings.redis_url, **_redis_kwargs(settings, {**defaults, **overrides}))


@lru_cache(maxsize=1)
def _retry_except_auth():
    """redis.asyncio Retry that lets AuthenticationError (a ConnectionError subclass) through untried."""
    from redis.asyncio.retry import Retry
    from redis.exceptions import AuthenticationError

    class RetryExceptAuth(Retry):
        async def call_with_retry(self, do, fail, is_retryable=None, with_failure_count=False):
            def retryable(error: Exception) -> bool:
                return not isinstance(error, AuthenticationError) and (is_retryable is None or is_retryable(error))

            return await super().call_with_retry(do, fail, retryable, with_failure_count)

    return RetryExceptAuth


def redis_error_message(settings: Settings, exc: BaseException) -> str:
    """One line that says why Redis at settings.redis_url cannot be used and what to do about it."""
    from redis.exceptions import AuthenticationError

    where = safe_url(settings.redis_url)
    text = str(exc)
    if isinstance(exc, AuthenticationError):
        source = redis_password_source(settings)
        if "without any password configured" in text or "no password is set" in text:
            return (f"Redis at {where} has no password, but one was sent (from {source}); remove it there, "
                    f"or set MEDM2T_REDIS_PASSWORD= (empty) to send none")
        if source == "none":
            return (f"Redis at {where} requires a password; put it in the URL "
                    f"(redis://:PASSWORD@host:port/db) or in MEDM2T_REDIS_PASSWORD. `medm2t stack up` keeps the "
                    f"local one's in {redis_password_file(settings)}")
        return f"Redis at {where} rejected the password from {source} ({text}); check it"
    return (f"Redis at {where} is not reachable ({type(exc).__name__}: {text}); start the local one with "
            f"`medm2t stack up`, or point at yours with --redis URL or MEDM2T_REDIS_URL")


def stack_redis_password(settings: Settings) -> str | None:
    """The password the local Redis of `medm2t stack up` / `medm2t demo` is started with: MEDM2T_REDIS_PASSWORD
    when set (set empty: no password), else the one in RUN_DIR/redis.password, generated there once (0600)."""
    if settings.redis.password is not None:
        return settings.redis.password.get_secret_value() or None
    path = redis_password_file(settings)
    if path.is_file():
        existing = path.read_text().strip()
        if existing:
            return existing
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    os.replace(tmp, path)
    return password
