"""One settings object per service, read from environment variables with a per-service prefix.

A service subclasses `ServiceSettings` and sets `model_config = service_config("GATEWAY")`, so
its variables are `REELFORGE_GATEWAY_DATABASE_URL`, `REELFORGE_GATEWAY_KAFKA_BOOTSTRAP`, ...
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def service_config(service: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=f"REELFORGE_{service.upper()}_", extra="ignore")


class ServiceSettings(BaseSettings):
    model_config = service_config("SERVICE")

    service_name: str = "reelforge"
    instance_id: str = "0"
    database_url: SecretStr = SecretStr("postgresql://reelforge@127.0.0.1:5432/reelforge")
    database_pool_size: int = Field(default=10, ge=1, le=200)
    kafka_bootstrap: str = "127.0.0.1:9092"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)
    content_dir: Path = Path(".cache/content")  # the local store, or the S3 driver's cache and scratch space
    content_driver: Literal["local", "s3"] = "local"
    content_max_object_bytes: int = Field(default=2 * 1024**3, gt=0)
    content_cache_max_bytes: int = Field(default=10 * 1024**3, gt=0)  # S3 driver: local read-through cache
    content_s3_endpoint: str = ""  # e.g. https://s3.eu-west-1.amazonaws.com, or an S3-compatible server
    content_s3_bucket: str = ""
    content_s3_region: str = "us-east-1"
    content_s3_prefix: str = ""
    content_s3_addressing: Literal["path", "virtual"] = "path"
    content_s3_access_key_id: SecretStr | None = None
    content_s3_secret_access_key: SecretStr | None = None
    # Free space the content store keeps in reserve: a write that would eat into it waits (StoreFull).
    content_min_free_bytes: int = Field(default=0, ge=0)
    log_level: str = "INFO"
    log_file: Path | None = None
    # Where finished spans go: an OTLP endpoint, a JSON-lines file (handy locally and in tests), or nowhere.
    otlp_endpoint: str | None = None
    trace_file: Path | None = None
    shutdown_grace_seconds: float = Field(default=10.0, ge=0)
    # How long the inbox remembers an applied event id: longer than Kafka keeps a consumed topic's
    # records (7 days by default) and than any provider retries a webhook, so a duplicate is always caught.
    inbox_retention_hours: float = Field(default=8 * 24, ge=1)
