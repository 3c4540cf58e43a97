"""Service settings: environment overrides, and refusal of unsafe configurations."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import Field, ValidationError

from services.runtime.settings import ServiceSettings


class DosingSettings(ServiceSettings):
    """What a service's own subclass looks like."""

    max_bolus_u: float = Field(default=10.0, gt=0, le=25)


def production(**overrides: object) -> dict[str, object]:
    values: dict[str, object] = {
        "environment": "production",
        "database_url": "postgresql://svc@db/langerhans",
        "grpc_tls_cert_path": Path("/etc/tls/tls.crt"),
        "grpc_tls_key_path": Path("/etc/tls/tls.key"),
    }
    values.update(overrides)
    return values


def test_environment_variables_configure_a_service(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGERHANS_SERVICE_NAME", "dosing-engine")
    monkeypatch.setenv("LANGERHANS_GRPC_PORT", "50071")
    monkeypatch.setenv("LANGERHANS_MAX_BOLUS_U", "8.5")
    monkeypatch.setenv("DATABASE_URL", "postgresql://svc@db/langerhans")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-0:9092,kafka-1:9092")
    settings = DosingSettings()
    assert settings.service_name == "dosing-engine"
    assert settings.grpc_port == 50071
    assert settings.max_bolus_u == 8.5
    assert settings.database_url == "postgresql://svc@db/langerhans"
    assert settings.kafka_bootstrap_servers == "kafka-0:9092,kafka-1:9092"


def test_a_service_limit_outside_its_bounds_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LANGERHANS_MAX_BOLUS_U", "40")
    with pytest.raises(ValidationError, match="max_bolus_u"):
        DosingSettings()


def test_production_with_safe_values_is_accepted() -> None:
    settings = DosingSettings(**production())  # type: ignore[arg-type]
    assert settings.environment == "production"


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"database_url": None}, "DATABASE_URL"),
        ({"clock_speed": 60.0}, "accelerated clock"),
        ({"grpc_tls_cert_path": None, "grpc_tls_key_path": None}, "TLS"),
    ],
)
def test_production_refuses_unsafe_defaults(overrides: dict[str, object], reason: str) -> None:
    with pytest.raises(ValidationError, match=reason):
        DosingSettings(**production(**overrides))  # type: ignore[arg-type]


def test_half_configured_tls_is_refused_everywhere() -> None:
    with pytest.raises(ValidationError, match="certificate and its key"):
        ServiceSettings(grpc_tls_cert_path=Path("/tmp/cert.pem"))
    with pytest.raises(ValidationError, match="CA"):
        ServiceSettings(
            grpc_tls_cert_path=Path("/tmp/cert.pem"),
            grpc_tls_key_path=Path("/tmp/key.pem"),
            grpc_require_client_cert=True,
        )


@pytest.mark.parametrize("port", ["-1", "65536", "not-a-port"])
def test_bad_ports_are_refused(monkeypatch: pytest.MonkeyPatch, port: str) -> None:
    monkeypatch.setenv("LANGERHANS_GRPC_PORT", port)
    with pytest.raises(ValidationError, match="grpc_port"):
        ServiceSettings()
