"""Gateway settings: validated at start-up, refusing unsafe defaults outside development."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator

from services.runtime.settings import ServiceSettings, var_dir

__all__ = ["DEV_SECRET_PEPPER", "GatewaySettings"]

# Only ever valid in development: any other environment must configure its own values.
DEV_SECRET_PEPPER = "development-only-pepper-never-use-in-production"  # noqa: S105
MIN_PEPPER_CHARS = 32


class GatewaySettings(ServiceSettings):
    """Everything the gateway needs; `LANGERHANS_*` environment variables."""

    service_name: str = "gateway"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8000, ge=0, le=65535)
    public_url: str = Field(default="", description="base URL used as JWT issuer; empty = local")

    # Asymmetric signing key for access tokens (Ed25519 PEM). Outside development it must be
    # configured; in development one is generated once under var/gateway/.
    jwt_private_key_pem: SecretStr | None = None
    jwt_private_key_file: Path | None = None
    # Public keys of retired signing keys still honoured until their tokens expire (PEM list).
    jwt_previous_public_keys_pem: list[str] = Field(default_factory=list)
    access_token_ttl_s: int = Field(default=600, ge=30, le=3600)
    refresh_token_ttl_s: int = Field(default=30 * 86_400, ge=600, le=90 * 86_400)
    # Keyed hash for Nightscout secrets and tokens at rest (an HMAC key, not a password).
    secret_pepper: SecretStr = SecretStr(DEV_SECRET_PEPPER)

    argon2_time_cost: int = Field(default=3, ge=1, le=10)
    argon2_memory_kib: int = Field(default=65_536, ge=8, le=1_048_576)

    oauth_code_ttl_s: int = Field(default=60, ge=10, le=600)
    partner_rate_limit_per_min: int = Field(default=120, ge=1, le=100_000)
    invitation_ttl_s: int = Field(default=7 * 86_400, ge=60)
    enrolment_token_ttl_s: int = Field(default=3600, ge=60, le=7 * 86_400)
    max_request_bytes: int = Field(default=2_000_000, ge=1024)

    # Backend services (gRPC, host:port); unset = that feature answers 503. The supervisor sets
    # LANGERHANS_<SERVICE>_ADDR for the one-machine run.
    dosing_engine_addr: str | None = None
    cgm_ingestion_addr: str | None = None
    alerts_addr: str | None = None
    device_gateway_addr: str | None = None
    grpc_deadline_s: float = Field(default=5.0, gt=0, le=60)
    # Sent as `authorization: Bearer …` on every service call (service-token auth, see
    # docs/gateway.md); TLS to the services when grpc_tls_ca_path is set (client cert optional).
    service_token: SecretStr | None = None
    # Live stream: the Kafka fan-out consumer (unset = on, except in the test environment) and
    # the per-client queue bound.
    stream_kafka: bool | None = None
    stream_queue_size: int = Field(default=256, ge=8, le=100_000)
    # How often a live connection's token and permissions are re-checked (revocation bound).
    stream_recheck_s: float = Field(default=5.0, gt=0, le=300)
    # Remote bolus: a confirmation is valid this long after the calculation; at most one bolus
    # is issued per person per decision window.
    bolus_confirm_ttl_s: int = Field(default=300, ge=30, le=300)
    bolus_decision_window_s: int = Field(default=300, ge=60, le=3600)
    # Development only (`langerhans run` sets these): demo accounts for the simulated fleet's
    # people, a caregiver and a clinician, and their therapy settings (gateway/demo.py).
    demo: bool = False
    demo_people: int = Field(default=0, ge=0, le=1000)
    demo_password: SecretStr | None = None

    @property
    def issuer(self) -> str:
        return self.public_url.rstrip("/") or f"http://{self.http_host}:{self.http_port}"

    @model_validator(mode="after")
    def _refuse_unsafe_defaults(self) -> GatewaySettings:
        if self.metrics_port and self.metrics_port == self.http_port:
            raise ValueError(
                "LANGERHANS_METRICS_PORT must differ from LANGERHANS_HTTP_PORT: metrics are "
                "never served on the public port"
            )
        if self.demo and self.environment == "production":
            raise ValueError(
                f"LANGERHANS_DEMO creates accounts with a known password: development only, "
                f"refused in {self.environment}"
            )
        if self.environment == "development":
            return self
        if self.jwt_private_key_pem is None and self.jwt_private_key_file is None:
            raise ValueError(
                f"{self.environment} needs a configured JWT signing key "
                "(LANGERHANS_JWT_PRIVATE_KEY_PEM or LANGERHANS_JWT_PRIVATE_KEY_FILE)"
            )
        pepper = self.secret_pepper.get_secret_value()
        if pepper == DEV_SECRET_PEPPER or len(pepper) < MIN_PEPPER_CHARS:
            raise ValueError(
                f"{self.environment} needs LANGERHANS_SECRET_PEPPER set to a random value of "
                f"at least {MIN_PEPPER_CHARS} characters"
            )
        if self.environment == "production" and (
            self.argon2_memory_kib < 19_456 or self.argon2_time_cost < 2
        ):
            raise ValueError("argon2 cost below the OWASP minimum (19 MiB, t=2) is for tests only")
        return self

    @property
    def stream_kafka_enabled(self) -> bool:
        return self.stream_kafka if self.stream_kafka is not None else self.environment != "test"

    def dev_key_path(self) -> Path:
        return var_dir() / "gateway" / "jwt_ed25519.pem"
