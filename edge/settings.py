"""Edge agent settings (environment prefix `LANGERHANS_`; command-line options override).

The hub's identity lives in its state directory (`var/edge/<hub>/` by default): its key and
certificate from enrolment, the platform CA it trusts, the pinned command keys, the hard limits
written once at provisioning, and its durable stores (outbox, replay state, delivery tracker).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field

from services.runtime.settings import ServiceSettings, var_dir

__all__ = ["EdgeSettings"]


class EdgeSettings(ServiceSettings):
    service_name: str = "edge"
    # The device gateway's service port (development bootstrap of enrolment tokens only).
    device_gateway_addr: str = Field(
        default="127.0.0.1:50051",
        validation_alias=AliasChoices("LANGERHANS_DEVICE_GATEWAY_ADDR", "DEVICE_GATEWAY_ADDR"),
    )
    # Hub-facing ports of the device gateway: mutual TLS stream and enrolment.
    hub_addr: str | None = None
    enroll_addr: str | None = None
    # Trust anchor for the gateway's server certificate before enrolment (provisioned with the
    # hub); development default: the gateway's development CA in var/pki/device/ca.pem.
    gateway_ca_path: Path | None = None
    enrollment_token: str | None = None
    dev_admin_token: str = "langerhans-dev-admin"  # noqa: S105 - development bootstrap only
    state_root: Path = Field(default_factory=lambda: var_dir() / "edge")
    poll_interval_s: float = Field(default=30.0, gt=0)  # on the (possibly simulated) clock
    heartbeat_interval_s: float = Field(default=60.0, gt=0)
    # Cloud silent this long → offline fallback (temp basal runs out, local suspend armed).
    offline_after_s: float = Field(default=300.0, gt=0)
    suspend_threshold_mg_dl: float = Field(default=80.0, ge=60, le=120)
    suspend_horizon_min: float = Field(default=30.0, gt=0, le=60)

    def _derive(self, port: int) -> str:
        host = self.device_gateway_addr.rsplit(":", 1)[0]
        return f"{host}:{port}"

    @property
    def resolved_hub_addr(self) -> str:
        return self.hub_addr or self._derive(50061)

    @property
    def resolved_enroll_addr(self) -> str:
        return self.enroll_addr or self._derive(50062)

    @property
    def resolved_gateway_ca_path(self) -> Path:
        return self.gateway_ca_path or var_dir() / "pki" / "device" / "ca.pem"
