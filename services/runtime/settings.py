"""Settings shared by every deployable; each service subclasses `ServiceSettings`.

Values come from the environment (prefix `LANGERHANS_`, plus the conventional
`KAFKA_BOOTSTRAP_SERVERS` and `DATABASE_URL`). Unsafe defaults are refused outside development.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.runtime.clock import Clock, clock_from_settings

__all__ = ["REPO_ROOT", "ServiceSettings", "var_dir"]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_KAFKA_BOOTSTRAP = "127.0.0.1:19092"


def var_dir() -> Path:
    """Where local state (SQLite files, Kafka data, keys) lives: `LANGERHANS_VAR_DIR`, or the
    checkout's git-ignored `var/` (an installed image points it at a writable volume)."""
    configured = os.environ.get("LANGERHANS_VAR_DIR")
    path = Path(configured) if configured else REPO_ROOT / "var"
    path.mkdir(parents=True, exist_ok=True)
    return path


# For a consumer of a high-rate stream (cgm-ingestion, alerts): at 1,000 readings/s a fetch
# answered at once carries a few records, and each poll's transaction, commit and hand-off cost
# more than the readings in it. Waiting up to 20 ms for 32 KB gives batches of ~20–100 records:
# about 40 % less CPU per reading in a steady stream and a shorter p99, for ≤ 20 ms more latency
# per hop (docs/cgm-ingestion.md).
STREAM_FETCH_MIN_BYTES = 32 * 1024
STREAM_FETCH_MAX_WAIT_MS = 20


class ServiceSettings(BaseSettings):
    """Common settings; subclass per service and add its own fields."""

    model_config = SettingsConfigDict(env_prefix="LANGERHANS_", extra="ignore")

    environment: Literal["development", "test", "production"] = "development"
    service_name: str = "langerhans"
    kafka_bootstrap_servers: str = Field(
        default=DEFAULT_KAFKA_BOOTSTRAP,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "LANGERHANS_KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    # A consumer's fetch waits for this many bytes or this long, whichever comes first (Kafka's
    # fetch.min.bytes / fetch.max.wait.ms). The defaults answer at once; a high-rate consumer
    # sets the STREAM_FETCH_* floor so a steady stream arrives in batches worth a transaction.
    kafka_fetch_min_bytes: int = Field(default=1, ge=1, le=50 * 1024 * 1024)
    kafka_fetch_max_wait_ms: int = Field(default=500, ge=0, le=5_000)
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "LANGERHANS_DATABASE_URL"),
        description="postgresql://… for PostgreSQL; unset means a SQLite file per service in var/",
    )
    grpc_host: str = "127.0.0.1"
    grpc_port: int = Field(default=0, ge=0, le=65535)
    grpc_health_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="plain-text port serving only grpc.health.v1 (kubelet probes cannot do TLS)",
    )
    metrics_port: int = Field(default=0, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # gRPC TLS: certificate and key (PEM) turn TLS on; a CA bundle plus
    # grpc_require_client_cert turns on mutual TLS (callers must present a cert from that CA).
    grpc_tls_cert_path: Path | None = None
    grpc_tls_key_path: Path | None = None
    grpc_tls_ca_path: Path | None = None
    grpc_require_client_cert: bool = False
    grpc_shutdown_grace_s: float = Field(default=5.0, ge=0, le=300)
    log_level: str = "INFO"
    log_json: bool = True
    clock_speed: float = Field(default=1.0, gt=0, le=10_000)
    clock_sim_start: datetime | None = None
    clock_real_start_epoch_s: float | None = None

    def consumer_overrides(self) -> dict[str, int]:
        """KafkaConsumer options of a service consumer: topics created while the service
        starts are found within seconds, not minutes; the fetch floor above."""
        return {
            "metadata_max_age_ms": 5000,
            "fetch_min_bytes": self.kafka_fetch_min_bytes,
            "fetch_max_wait_ms": self.kafka_fetch_max_wait_ms,
        }

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> ServiceSettings:
        if self.environment == "production":
            if self.database_url is None:
                raise ValueError("production needs DATABASE_URL (PostgreSQL), not SQLite")
            if self.clock_speed != 1.0:
                raise ValueError("an accelerated clock is for simulation only, never production")
            if self.grpc_tls_cert_path is None:
                raise ValueError(
                    "production needs gRPC TLS (LANGERHANS_GRPC_TLS_CERT_PATH/KEY_PATH)"
                )
        if (self.grpc_tls_cert_path is None) != (self.grpc_tls_key_path is None):
            raise ValueError("gRPC TLS needs both a certificate and its key")
        if self.grpc_require_client_cert and (
            self.grpc_tls_ca_path is None or self.grpc_tls_cert_path is None
        ):
            raise ValueError("requiring client certificates needs TLS and a CA (grpc_tls_ca_path)")
        return self

    def clock(self) -> Clock:
        return clock_from_settings(
            self.clock_speed, self.clock_sim_start, self.clock_real_start_epoch_s
        )
