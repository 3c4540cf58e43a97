"""Edge agent settings (environment prefix `LANGERHANS_`; command-line options override).

The hub's identity lives in its state directory (`var/edge/<hub>/` by default): its key and
certificate from enrolment, the platform CA it trusts, the pinned command keys, the hard limits
written once at provisioning, and its durable stores (outbox, replay state, delivery tracker).

A plain class rather than the services' pydantic `ServiceSettings`: pydantic and
pydantic-settings alone are ~12 MB of a hub's resident memory. Same names, same environment
variables, same checks for the fields the hub uses.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from services.runtime.clock import Clock, clock_from_settings

__all__ = ["EdgeSettings", "SettingsError", "edge_var_dir"]

_REPO_ROOT = Path(__file__).resolve().parents[1]
_ENVIRONMENTS = ("development", "test", "production")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


class SettingsError(ValueError):
    """A setting is missing its required form or outside its range."""


def edge_var_dir() -> Path:
    """`services.runtime.settings.var_dir()` without importing pydantic (a test keeps the two
    equal): `LANGERHANS_VAR_DIR`, or the checkout's git-ignored `var/`."""
    configured = os.environ.get("LANGERHANS_VAR_DIR")
    path = Path(configured) if configured else _REPO_ROOT / "var"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(f"not a boolean: {raw!r}")


def _optional_path(raw: str) -> Path | None:
    return Path(raw) if raw else None


def _optional_float(raw: str) -> float | None:
    return float(raw) if raw else None


def _optional_datetime(raw: str) -> datetime | None:
    return datetime.fromisoformat(raw) if raw else None


def _optional_str(raw: str) -> str | None:
    return raw or None


# field → (parser of the environment's text, default factory, environment names)
_FIELDS: dict[str, tuple[Callable[[str], Any], Callable[[], Any], tuple[str, ...]]] = {
    "environment": (str, lambda: "development", ()),
    "service_name": (str, lambda: "edge", ()),
    # The device gateway's service port (development bootstrap of enrolment tokens only).
    "device_gateway_addr": (
        str,
        lambda: "127.0.0.1:50051",
        ("LANGERHANS_DEVICE_GATEWAY_ADDR", "DEVICE_GATEWAY_ADDR"),
    ),
    # Hub-facing ports of the device gateway: mutual TLS stream and enrolment.
    "hub_addr": (_optional_str, lambda: None, ()),
    "enroll_addr": (_optional_str, lambda: None, ()),
    # Trust anchor for the gateway's server certificate before enrolment (provisioned with the
    # hub); development default: the gateway's development CA in var/pki/device/ca.pem.
    "gateway_ca_path": (_optional_path, lambda: None, ()),
    "enrollment_token": (_optional_str, lambda: None, ()),
    "dev_admin_token": (str, lambda: "langerhans-dev-admin", ()),  # development bootstrap only
    "state_root": (Path, lambda: edge_var_dir() / "edge", ()),
    "poll_interval_s": (float, lambda: 30.0, ()),  # on the (possibly simulated) clock
    "heartbeat_interval_s": (float, lambda: 60.0, ()),
    # Cloud silent this long → offline fallback (temp basal runs out, local suspend armed).
    "offline_after_s": (float, lambda: 300.0, ()),
    "suspend_threshold_mg_dl": (float, lambda: 80.0, ()),
    "suspend_horizon_min": (float, lambda: 30.0, ()),
    "log_level": (str, lambda: "INFO", ()),
    "log_json": (_bool, lambda: True, ()),
    "clock_speed": (float, lambda: 1.0, ()),
    "clock_sim_start": (_optional_datetime, lambda: None, ()),
    "clock_real_start_epoch_s": (_optional_float, lambda: None, ()),
}


class EdgeSettings:
    environment: str
    service_name: str
    device_gateway_addr: str
    hub_addr: str | None
    enroll_addr: str | None
    gateway_ca_path: Path | None
    enrollment_token: str | None
    dev_admin_token: str
    state_root: Path
    poll_interval_s: float
    heartbeat_interval_s: float
    offline_after_s: float
    suspend_threshold_mg_dl: float
    suspend_horizon_min: float
    log_level: str
    log_json: bool
    clock_speed: float
    clock_sim_start: datetime | None
    clock_real_start_epoch_s: float | None

    def __init__(self, *, environ: Mapping[str, str] | None = None, **overrides: Any) -> None:
        """Keyword arguments win over the environment, which wins over the defaults."""
        env = os.environ if environ is None else environ
        unknown = set(overrides) - set(_FIELDS)
        if unknown:
            raise SettingsError(f"unknown edge settings: {sorted(unknown)}")
        for name, (parse, default, names) in _FIELDS.items():
            if name in overrides:
                value = overrides[name]
            else:
                raw = next(
                    (env[n] for n in names or (f"LANGERHANS_{name.upper()}",) if n in env), None
                )
                try:
                    value = default() if raw is None else parse(raw)
                except ValueError as exc:
                    raise SettingsError(f"{name}: {exc}") from exc
            setattr(self, name, value)
        self._check()

    def _check(self) -> None:
        if self.environment not in _ENVIRONMENTS:
            raise SettingsError(f"environment must be one of {_ENVIRONMENTS}")
        for name in ("poll_interval_s", "heartbeat_interval_s", "offline_after_s"):
            value = float(getattr(self, name))
            if not (math.isfinite(value) and value > 0):
                raise SettingsError(f"{name} must be > 0")
        if not 60 <= self.suspend_threshold_mg_dl <= 120:
            raise SettingsError("suspend_threshold_mg_dl must be within 60–120")
        if not 0 < self.suspend_horizon_min <= 60:
            raise SettingsError("suspend_horizon_min must be within (0, 60]")
        if not 0 < self.clock_speed <= 10_000:
            raise SettingsError("clock_speed must be within (0, 10000]")
        if self.environment == "production" and self.clock_speed != 1.0:
            raise SettingsError("an accelerated clock is for simulation only, never production")
        self.state_root = Path(self.state_root)
        if self.gateway_ca_path is not None:
            self.gateway_ca_path = Path(self.gateway_ca_path)

    def clock(self) -> Clock:
        return clock_from_settings(
            self.clock_speed, self.clock_sim_start, self.clock_real_start_epoch_s
        )

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
        return self.gateway_ca_path or edge_var_dir() / "pki" / "device" / "ca.pem"
