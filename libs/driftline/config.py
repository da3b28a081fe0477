"""Settings shared by every service, read from ``DRIFTLINE_*`` environment variables.

Embedded mode needs none of them: everything defaults to local state under
``DRIFTLINE_HOME`` (``.driftline/``). Distributed mode points the same fields
at a Kafka cluster, a schema registry, a ClickHouse server and the registry
service.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFTLINE_", extra="ignore")

    home: Path = Field(Path(".driftline"), description="All local state: store, registry, checkpoints.")
    kafka_bootstrap: str | None = Field(None, description="host:port list; unset means the in-process bus.")
    schema_registry_url: str | None = Field(None, description="Confluent-compatible registry; unset means in-process.")
    store_dsn: str | None = Field(None, description="clickhouse-connect DSN; unset means chdb://HOME/store.")
    registry_url: str | None = Field(None, description="Registry service URL; unset means the local registry under HOME.")
    registry_token: SecretStr | None = Field(None, description="Bearer token required by registry write endpoints.")
    partitions: int = Field(3, ge=1, description="Partitions per topic when driftline creates topics.")
    batch_size: int = Field(1000, ge=1, description="Records per poll.")
    poll_timeout_s: float = Field(0.2, gt=0)
    label_ttl_ms: int = Field(3_600_000, ge=0, description="How long an early label waits for its prediction.")

    @property
    def resolved_store_dsn(self) -> str:
        return self.store_dsn or f"chdb://{(self.home / 'store').resolve()}"

    @property
    def registry_home(self) -> Path:
        return self.home / "registry"
