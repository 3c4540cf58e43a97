"""Settings of the device gateway (environment prefix `LANGERHANS_`)."""

from __future__ import annotations

import os
import socket
from datetime import timedelta
from pathlib import Path

from pydantic import Field, model_validator

from services.runtime.security import token_digest
from services.runtime.settings import ServiceSettings, var_dir

__all__ = ["DEV_ADMIN_TOKEN", "DeviceGatewaySettings"]

# Development-only admin token: accepted for CreateEnrollmentToken from loopback callers when
# environment == development, so the simulated fleet can enrol itself. Refused elsewhere.
DEV_ADMIN_TOKEN = "langerhans-dev-admin"  # noqa: S105 - development bootstrap, loopback only


class DeviceGatewaySettings(ServiceSettings):
    service_name: str = "device-gateway"
    grpc_port: int = Field(default=50051, ge=0, le=65535)
    # Hub-facing listeners: mutual TLS for Connect, server-only TLS for Enroll.
    hub_host: str = "127.0.0.1"
    hub_port: int = Field(default=50061, ge=0, le=65535)
    enroll_port: int = Field(default=50062, ge=0, le=65535)
    # Replica identity (one consumer group per replica on pump.commands.v1).
    replica_id: str = Field(
        default_factory=lambda: os.environ.get("HOSTNAME") or socket.gethostname()
    )
    # Platform device CA; unset in development means `var/pki/device/` (generated).
    device_ca_cert_path: Path | None = None
    device_ca_key_path: Path | None = None
    # Gateway server certificate for the hub listeners; unset in development: issued by the CA.
    hub_tls_cert_path: Path | None = None
    hub_tls_key_path: Path | None = None
    # Public keys (PEM) the hubs pin to verify pump commands; unset in development means the
    # development signing key `var/keys/command-signing.pub` (created if missing).
    command_public_key_paths: list[Path] = Field(default_factory=list)
    # SHA-256 digests of admin bearer tokens (CreateEnrollmentToken, RevokeDevice).
    admin_token_digests: list[str] = Field(default_factory=list)
    enrollment_token_ttl_s: float = Field(default=24 * 3600, gt=0)
    certificate_validity_days: int = Field(default=365, ge=1, le=3650)
    cloud_heartbeat_interval_s: float = Field(default=15.0, gt=0)
    hub_offline_after_s: float = Field(default=180.0, gt=0)
    peripheral_silent_after_s: float = Field(default=15 * 60.0, gt=0)
    expiry_sweep_interval_s: float = Field(default=1.0, gt=0)
    # SENT/RECEIVED commands with no final outcome this long after expiry become UNCERTAIN
    in_flight_grace_s: float = Field(default=120.0, ge=0)

    @model_validator(mode="after")
    def _production_needs_real_ca(self) -> DeviceGatewaySettings:
        if self.environment == "production":
            if self.device_ca_cert_path is None or self.device_ca_key_path is None:
                raise ValueError("production needs the platform device CA from secret files")
            if self.hub_tls_cert_path is None or self.hub_tls_key_path is None:
                raise ValueError("production needs the hub listener's TLS certificate")
            if not self.command_public_key_paths:
                raise ValueError("production needs the pinned command public keys")
            if not self.admin_token_digests:
                raise ValueError("production needs admin token digests")
        return self

    @property
    def pki_dir(self) -> Path:
        return var_dir() / "pki" / "device"

    @property
    def enrollment_token_ttl(self) -> timedelta:
        return timedelta(seconds=self.enrollment_token_ttl_s)

    def admin_digests(self) -> frozenset[str]:
        digests = set(self.admin_token_digests)
        if self.environment == "development":
            digests.add(token_digest(DEV_ADMIN_TOKEN))
        return frozenset(digests)
