"""The gateway's own tables (its schema); other services' data is reached over gRPC only.

Times are stored as timezone-aware UTC. Secrets are never stored in the clear: passwords as
argon2 hashes, opaque tokens (refresh, OAuth codes, invitations, enrolment, Nightscout) as
SHA-256 or keyed HMAC digests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from services.runtime import outbox
from services.runtime.db import new_metadata

__all__ = [
    "Account",
    "AuditRow",
    "Base",
    "BolusGuard",
    "BolusRequest",
    "Clinic",
    "ClinicMembership",
    "ClinicPatient",
    "Device",
    "EnrolmentToken",
    "Invitation",
    "NsDeviceStatus",
    "NsEntry",
    "NsProfile",
    "NsSecret",
    "NsToken",
    "NsTreatment",
    "OAuthClient",
    "OAuthCode",
    "OAuthGrant",
    "RefreshToken",
    "Share",
    "TherapySettingsVersion",
    "Treatment",
    "Webhook",
]


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite would hand back naive ones)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = new_metadata()
    type_annotation_map: dict[Any, Any] = {  # noqa: RUF012 - SQLAlchemy's declared hook
        datetime: UTCDateTime(),
        dict[str, Any]: JSON,
        list[str]: JSON,
    }


class Account(Base):
    __tablename__ = "accounts"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    display_name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class Clinic(Base):
    __tablename__ = "clinics"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    created_at: Mapped[datetime]


class ClinicMembership(Base):
    """A clinician working at a clinic."""

    __tablename__ = "clinic_memberships"
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    clinician_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    is_clinic_admin: Mapped[bool] = mapped_column(Boolean, default=False)


class ClinicPatient(Base):
    """A person who accepted a clinic's care: its clinicians may see and edit settings."""

    __tablename__ = "clinic_patients"
    clinic_id: Mapped[str] = mapped_column(ForeignKey("clinics.id"), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Share(Base):
    """A follower (caregiver) of a person with per-follower permissions."""

    __tablename__ = "shares"
    __table_args__ = (UniqueConstraint("person_id", "follower_id"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    follower_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    can_view: Mapped[bool] = mapped_column(Boolean, default=True)
    can_receive_alerts: Mapped[bool] = mapped_column(Boolean, default=False)
    can_remote_bolus: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Invitation(Base):
    """An invitation to follow a person (kind=follower) or to join a clinic (kind=clinic)."""

    __tablename__ = "invitations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    person_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id"))
    clinic_id: Mapped[str | None] = mapped_column(ForeignKey("clinics.id"))
    created_by: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    permissions: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    accepted_at: Mapped[datetime | None]
    accepted_by: Mapped[str | None] = mapped_column(String(36))
    revoked_at: Mapped[datetime | None]


class RefreshToken(Base):
    """One refresh token of a family; a family is one sign-in (or one OAuth grant)."""

    __tablename__ = "refresh_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    family_id: Mapped[str] = mapped_column(String(36), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    client_id: Mapped[str | None] = mapped_column(String(64))
    scopes: Mapped[list[str]]
    issued_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    rotated_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class OAuthClient(Base):
    __tablename__ = "oauth_clients"
    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    owner_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    redirect_uris: Mapped[list[str]]
    rate_limit_per_min: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class OAuthCode(Base):
    __tablename__ = "oauth_codes"
    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scopes: Mapped[list[str]]
    code_challenge: Mapped[str] = mapped_column(String(128))
    family_id: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]


class OAuthGrant(Base):
    """Consent a person gave an app; revoking it revokes every token of the app for them."""

    __tablename__ = "oauth_grants"
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id"), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    scopes: Mapped[list[str]]
    granted_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class Webhook(Base):
    __tablename__ = "webhooks"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id"), index=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    url: Mapped[str] = mapped_column(Text)
    events: Mapped[list[str]]
    # The HMAC key has to be usable to sign deliveries, so it is kept (not hashed).
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]


class Device(Base):
    __tablename__ = "devices"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(100))
    enrolled_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class EnrolmentToken(Base):
    __tablename__ = "enrolment_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    device_kind: Mapped[str] = mapped_column(String(16))
    device_name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    used_at: Mapped[datetime | None]
    device_id: Mapped[str | None] = mapped_column(String(36))


class TherapySettingsVersion(Base):
    __tablename__ = "therapy_settings"
    __table_args__ = (UniqueConstraint("person_id", "version"),)
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    settings: Mapped[dict[str, Any]]
    changed_by: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    changed_at: Mapped[datetime]
    reason: Mapped[str] = mapped_column(String(500))


class Treatment(Base):
    """Carbs and boluses recorded through the app API (published to services later)."""

    __tablename__ = "treatments"
    __table_args__ = (
        UniqueConstraint("person_id", "client_ref"),
        Index("ix_treatments_person_time", "person_id", "occurred_at"),
    )
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    client_ref: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    occurred_at: Mapped[datetime]
    carbs_g: Mapped[float | None] = mapped_column(Float)
    absorption_min: Mapped[int | None] = mapped_column(Integer)
    bolus_type: Mapped[str | None] = mapped_column(String(16))
    insulin_u: Mapped[float | None] = mapped_column(Float)
    immediate_u: Mapped[float | None] = mapped_column(Float)
    extended_u: Mapped[float | None] = mapped_column(Float)
    extended_duration_min: Mapped[int | None] = mapped_column(Integer)
    note: Mapped[str] = mapped_column(String(500), default="")
    entered_by: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    created_at: Mapped[datetime]


class NsSecret(Base):
    """A person's Nightscout API secret, as HMAC(pepper, SHA-1 hex) so it can be looked up."""

    __tablename__ = "ns_secrets"
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    secret_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]


class NsToken(Base):
    """A read-only Nightscout access token (`name-<hex>`), stored as an HMAC digest."""

    __tablename__ = "ns_tokens"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class NsEntry(Base):
    __tablename__ = "ns_entries"
    __table_args__ = (
        UniqueConstraint("person_id", "type", "date_ms"),
        Index("ix_ns_entries_person_date", "person_id", "date_ms"),
    )
    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    type: Mapped[str] = mapped_column(String(16))
    date_ms: Mapped[int] = mapped_column(BigInteger)
    sgv: Mapped[int | None] = mapped_column(Integer)
    direction: Mapped[str | None] = mapped_column(String(32))
    device: Mapped[str | None] = mapped_column(String(200))
    noise: Mapped[int | None] = mapped_column(Integer)
    doc: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]


class NsTreatment(Base):
    __tablename__ = "ns_treatments"
    __table_args__ = (
        UniqueConstraint("person_id", "created_at_ms", "event_type"),
        Index("ix_ns_treatments_person_time", "person_id", "created_at_ms"),
        Index("ix_ns_treatments_identifier", "person_id", "identifier"),
    )
    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    identifier: Mapped[str | None] = mapped_column(String(100))
    event_type: Mapped[str] = mapped_column(String(64))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    entered_by: Mapped[str | None] = mapped_column(String(200))
    insulin_u: Mapped[float | None] = mapped_column(Float)
    carbs_g: Mapped[float | None] = mapped_column(Float)
    doc: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]


class NsDeviceStatus(Base):
    __tablename__ = "ns_devicestatus"
    __table_args__ = (
        UniqueConstraint("person_id", "created_at_ms", "device"),
        Index("ix_ns_devicestatus_person_time", "person_id", "created_at_ms"),
    )
    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    created_at_ms: Mapped[int] = mapped_column(BigInteger)
    device: Mapped[str] = mapped_column(String(200))
    doc: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]


class NsProfile(Base):
    __tablename__ = "ns_profiles"
    __table_args__ = (Index("ix_ns_profiles_person_time", "person_id", "start_ms"),)
    id: Mapped[str] = mapped_column(String(24), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    start_ms: Mapped[int] = mapped_column(BigInteger)
    doc: Mapped[dict[str, Any]]
    received_at: Mapped[datetime]


class AuditRow(Base):
    """Tamper-evident log: each row hashes its content together with the previous row's hash."""

    __tablename__ = "audit_log"
    seq: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    occurred_at: Mapped[datetime]
    actor_id: Mapped[str | None] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(64))
    person_id: Mapped[str | None] = mapped_column(String(36))
    details: Mapped[dict[str, Any]]
    # Unique: two writers appending after the same row cannot both commit (no forked chain).
    prev_hash: Mapped[str] = mapped_column(String(64), unique=True)
    row_hash: Mapped[str] = mapped_column(String(64))


class BolusRequest(Base):
    """A bolus someone asked for (step 1) and, once confirmed, what became of it (step 2)."""

    __tablename__ = "bolus_requests"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), index=True)
    requested_by: Mapped[str] = mapped_column(ForeignKey("accounts.id"))
    origin: Mapped[str] = mapped_column(String(8))  # manual (the person) / remote
    kind: Mapped[str] = mapped_column(String(16))
    insulin_u: Mapped[float] = mapped_column(Float)
    immediate_pct: Mapped[float] = mapped_column(Float)
    extended_duration_min: Mapped[int] = mapped_column(Integer)
    carbs_g: Mapped[float] = mapped_column(Float)
    recommendation: Mapped[dict[str, Any]]
    calculated_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    # pending -> issuing -> issued | refused | uncertain; pending -> expired
    status: Mapped[str] = mapped_column(String(16))
    command_id: Mapped[str | None] = mapped_column(String(64))
    outcome: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    confirmed_at: Mapped[datetime | None]


class BolusGuard(Base):
    """One row per person, locked while a bolus is confirmed: at most one per decision window."""

    __tablename__ = "bolus_guards"
    person_id: Mapped[str] = mapped_column(ForeignKey("accounts.id"), primary_key=True)
    last_issued_at: Mapped[datetime | None]
    last_request_id: Mapped[str | None] = mapped_column(String(36))


# Events the gateway announces (therapy settings) leave through the shared transactional outbox.
outbox.include_in(Base.metadata)
