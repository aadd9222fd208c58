"""Configuration from the environment (MEDM2T_*), a .env file, or CLI flags that override both."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, field_serializer, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = REPO_ROOT / "model" / "checkpoints" / "demo"


def safe_url(url: str) -> str:
    """The URL with any password masked, fit for showing on a page or in a log. It lives here, not in
    medm2t/connections.py, because Settings masks its own redis_url with it and connections.py imports this
    module."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


class KafkaSettings(BaseSettings):
    """How clients authenticate to Kafka (MEDM2T_KAFKA_*). The address is Settings.kafka_url; every client
    is built from these through medm2t/connections.py."""

    model_config = SettingsConfigDict(env_prefix="MEDM2T_KAFKA_", env_file=".env", extra="ignore")

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism; PLAIN when a SASL protocol is chosen without one.")
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = Field(None, description="CA bundle for SSL / SASL_SSL (default: the system's).")
    compression: Literal["lz4", "gzip", "none"] = Field(
        "lz4", description="How producers (the replay, the worker, the dashboard's actions) compress record "
                           "batches. Every consumer reads all three.")

    @field_validator("security_protocol", "sasl_mechanism", mode="before")
    @classmethod
    def _upper(cls, v):
        return v.strip().upper() if isinstance(v, str) else v


class RedisSettings(BaseSettings):
    """How clients authenticate to and time out on Redis (MEDM2T_REDIS_*). The address is Settings.redis_url."""

    model_config = SettingsConfigDict(env_prefix="MEDM2T_REDIS_", env_file=".env", extra="ignore")

    password: SecretStr | None = Field(
        None, description="Used when the URL has none. Unset: the local stack's RUN_DIR/redis.password for a "
                          "127.0.0.1/localhost URL. Set empty: never send one.")
    cluster: bool = Field(False, description="The URL is one node of a Redis Cluster: clients find the others and "
                                             "route each stay's keys by their {stay:N} hash tag.")
    connect_timeout_s: float = 5.0
    socket_timeout_s: float = 10.0
    health_check_interval_s: int = 30


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDM2T_", env_file=".env", extra="ignore")

    # Services (clients are built from these in medm2t/connections.py only)
    kafka_url: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers (host:port[,host:port]).")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (redis:// or rediss:// for TLS).")
    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="Kafka security (MEDM2T_KAFKA_*).")
    redis: RedisSettings = Field(default_factory=RedisSettings, description="Redis password and timeouts.")
    partitions: int = Field(6, description="Partition count for created topics.")

    # Local stack (medm2t stack up)
    kafka_port: int = 9092
    redis_port: int = 6379
    run_dir: Path = Field(Path(".medm2t/run"), description="Logs and pid files of `medm2t stack`.")
    data_dir: Path = Field(Path(".medm2t/data"), description="Where the demo caches its synthetic cohort.")

    # Worker
    worker_group: str = Field("medm2t-worker", description="Kafka consumer group (the Faust app id) the workers "
                                                           "share; another name runs an independent deployment.")
    batch_max: int = Field(256, ge=1, description="Most stays per scoring batch, and most points the model scores "
                           "at once: each of the two scoring lanes takes up to half of these stays, and its passes "
                           "hold no more points than this (batches take what is due at once; they grow under load).")
    fetch_max_wait_ms: int = Field(20, description="Longest a fetch of input events waits at the broker for data. "
                                   "Brokers that answer a waiting fetch only when it times out (tansu) add up to "
                                   "this much event->score latency; Faust's own 1,500 ms is too long there.")
    faust_monitor: bool = Field(False, description="Keep faust-streaming's Monitor sensor. Its per-message hooks "
                                "keep statistics nothing here reads, and cost a bare Faust agent about a fifth of "
                                "its rate (docs/benchmarks.md, Faust tuning).")
    max_pending_points: int = Field(20_000, ge=1, description="The worker reads no further input while more "
                                    "scoring points than this wait in memory and some can be scored: under a "
                                    "backlog the broker keeps what the model has not reached yet.")
    point_idle_ms: int = Field(100, description="A caught-up partition quiet this long completes its stays' open points.")
    medm2t_cadence_min: float = Field(60.0, ge=0, description="MedM2T scores at most once per this many clinical minutes "
                                                        "(and on a NEWS2 band change and at the stay's close); 0 = every point.")
    scorers: str = Field("auto", description="Comma list of news2,medm2t; 'auto' = news2 plus medm2t when a checkpoint exists.")
    checkpoint: Path = Field(DEMO_CHECKPOINT, description="MedM2T checkpoint folder.")
    device: str = Field("auto", description="auto, cpu or cuda.")
    torch_threads: int = Field(0, ge=0, description="CPU threads of MedM2T's forward pass in this worker process; "
                               "0 = torch's default (all cores). `medm2t worker --processes N` sets it to the "
                               "cores divided among its N processes, so that they do not fight over cores.")
    model_process: bool = Field(True, description="Run MedM2T in a process of its own beside each worker "
                                "process, so that the event loop and the model use two cores (one worker scored "
                                "1.4x the events/s, docs/benchmarks.md). Its forward pass then gets "
                                "MEDM2T_TORCH_THREADS, or when that is 0 all cores but one.")
    metrics_port: int = Field(0, description="Port of the worker's Prometheus /metrics on 127.0.0.1 (0 = off).")
    escalate_after_min: float | None = Field(None, gt=0, description="Overrides the alert policy's escalation time "
                                                                     "(clinical minutes); unset: the policy's.")
    snooze_max_min: float | None = Field(None, gt=0, description="Overrides the alert policy's longest snooze "
                                                                 "(clinical minutes); unset: the policy's.")
    alert_policy: Path | None = Field(None, description="Alert policy JSON (stream/policy.py); default: the "
                                                        "checkpoint's alert-policy.json when MedM2T runs, else "
                                                        "the built-in policy. The two settings above win over it.")


    # Dashboard
    dashboard_port: int = 8501
    dashboard_refresh_s: float = 2.0

    # A password inside the Redis URL is masked wherever settings are shown, like the SecretStr fields.
    def __repr_args__(self):
        for name, value in super().__repr_args__():
            yield name, safe_url(value) if name == "redis_url" else value

    @field_serializer("redis_url")
    def _mask_redis_url(self, url: str) -> str:
        return safe_url(url)


def machine_cores() -> int:
    """The cores this process may run on (the defaults of the worker's processes and threads follow them)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@lru_cache
def get_settings() -> Settings:
    return Settings()


def with_overrides(settings: Settings, **overrides) -> Settings:
    """`settings` with some fields replaced, each validated as the environment's would be (a model_copy
    would take a wrong type or value as it is). Raises pydantic's ValidationError."""
    current = {name: getattr(settings, name) for name in type(settings).model_fields}
    return type(settings).model_validate({**current, **overrides})
