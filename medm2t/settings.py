"""Configuration from the environment (MEDM2T_*), a .env file, or CLI flags that override both."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CHECKPOINT = REPO_ROOT / "model" / "checkpoints" / "demo"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDM2T_", env_file=".env", extra="ignore")

    # Services
    kafka_url: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers (host:port[,host:port]).")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (redis:// or rediss:// for TLS).")
    kafka_security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.")
    kafka_sasl_mechanism: str | None = Field(None, description="e.g. PLAIN or SCRAM-SHA-256.")
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: Path | None = None
    partitions: int = Field(6, description="Partition count for created topics.")

    # Local stack (medm2t stack up)
    kafka_port: int = 9092
    redis_port: int = 6379
    run_dir: Path = Field(Path(".medm2t/run"), description="Logs and pid files of `medm2t stack`.")
    data_dir: Path = Field(Path(".medm2t/data"), description="Where the demo caches its synthetic cohort.")

    # Worker
    batch_max: int = Field(64, description="Flush a scoring batch at this many changed stays ...")
    batch_wait_ms: int = Field(250, description="... or after this many milliseconds.")
    scorers: str = Field("auto", description="Comma list of news2,medm2t; 'auto' = news2 plus medm2t when a checkpoint exists.")
    checkpoint: Path = Field(DEMO_CHECKPOINT, description="MedM2T checkpoint folder.")
    device: str = Field("auto", description="auto, cpu or cuda.")
    history_max: int = Field(2000, description="Raw events kept per stay (bounded history).")

    # Dashboard
    dashboard_port: int = 8501
    dashboard_refresh_s: float = 2.0


@lru_cache
def get_settings() -> Settings:
    return Settings()
