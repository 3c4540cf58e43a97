"""Storage of the device gateway: the only module that queries its tables.

Tables: enrolment tokens (hashed), devices (with the cloud's acked hub sequence and the latest
heartbeat), the certificate revocation list, pump commands and their transitions. Callers
pass a session and commit once per request or per handled message.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Table,
    select,
    update,
)
from sqlalchemy.orm import Session

from services.device_gateway.metrics import record_command_transition
from services.runtime import outbox
from services.runtime.db import new_metadata

__all__ = [
    "CommandRow",
    "DeviceRow",
    "commands",
    "devices",
    "metadata",
    "token_hash",
]

metadata = new_metadata()
outbox.include_in(metadata)

enrollment_tokens = Table(
    "enrollment_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("patient_id", String(128), nullable=False),
    Column("requested_by", String(128), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("used_at", DateTime(timezone=True), nullable=True),
    Column("device_id", String(64), nullable=True),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", String(64), primary_key=True),
    Column("patient_id", String(128), nullable=False, index=True),
    Column("hub_serial", String(128), nullable=False),
    Column("software_version", String(64), nullable=False),
    Column("state", Integer, nullable=False),
    Column("cert_serial", String(64), nullable=False),
    Column("cert_not_after", DateTime(timezone=True), nullable=False),
    Column("enrolled_at", DateTime(timezone=True), nullable=False),
    Column("last_seen_at", DateTime(timezone=True), nullable=True),
    Column("pump_model", String(128), nullable=False, default=""),
    Column("pump_serial", String(128), nullable=False, default=""),
    Column("cgm_model", String(128), nullable=False, default=""),
    Column("sensor_id", String(128), nullable=False, default=""),
    # highest hub_sequence durably stored (in the outbox) for this device
    Column("acked_hub_sequence", BigInteger, nullable=False, default=0),
    Column("last_heartbeat", LargeBinary, nullable=True),
    Column("last_pump_status", LargeBinary, nullable=True),
    Column("connected_replica", String(128), nullable=True),
    Column("connected_at", DateTime(timezone=True), nullable=True),
)

revoked_certificates = Table(
    "revoked_certificates",
    metadata,
    Column("cert_serial", String(64), primary_key=True),
    Column("device_id", String(64), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=False),
    Column("reason", String(500), nullable=False),
    Column("requested_by", String(128), nullable=False),
)

commands = Table(
    "commands",
    metadata,
    Column("command_id", String(64), primary_key=True),
    Column("device_id", String(64), nullable=False, index=True),
    Column("patient_id", String(128), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("state", Integer, nullable=False, index=True),
    Column("expires_at", DateTime(timezone=True), nullable=False, index=True),
    Column("signed_command", LargeBinary, nullable=False),
    Column("delivered_by_replica", String(128), nullable=True),
    Column("delivered_insulin_u", Float, nullable=False, default=0.0),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

command_transitions = Table(
    "command_transitions",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("command_id", String(64), ForeignKey("commands.command_id"), nullable=False, index=True),
    Column("state", Integer, nullable=False),
    Column("occurred_at", DateTime(timezone=True), nullable=False),
    Column("rejection_reason", Integer, nullable=False, default=0),
    Column("detail", String(500), nullable=False, default=""),
)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def aware(value: datetime | None) -> datetime | None:
    # SQLite returns naive datetimes; everything stored is UTC.
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


# ------------------------------------------------------------------ enrolment tokens
def add_token(
    session: Session,
    token: str,
    *,
    patient_id: str,
    requested_by: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    session.execute(
        enrollment_tokens.insert().values(
            token_hash=token_hash(token),
            patient_id=patient_id,
            requested_by=requested_by,
            created_at=now,
            expires_at=expires_at,
        )
    )


def consume_token(session: Session, token: str, now: datetime) -> str | None:
    """Marks an unused, unexpired token used; the patient id, or None if it is not valid."""
    digest = token_hash(token)
    row = (
        session.execute(select(enrollment_tokens).where(enrollment_tokens.c.token_hash == digest))
        .mappings()
        .first()
    )
    if row is None or row["used_at"] is not None:
        return None
    expires_at = aware(row["expires_at"])
    assert expires_at is not None
    result = session.execute(
        update(enrollment_tokens)
        .where(enrollment_tokens.c.token_hash == digest, enrollment_tokens.c.used_at.is_(None))
        .values(used_at=now)
    )
    if getattr(result, "rowcount", 0) != 1 or expires_at <= now:
        return None
    return str(row["patient_id"])


# ------------------------------------------------------------------ devices
@dataclass(frozen=True)
class DeviceRow:
    device_id: str
    patient_id: str
    hub_serial: str
    software_version: str
    state: int
    cert_serial: str
    enrolled_at: datetime
    last_seen_at: datetime | None
    pump_model: str
    pump_serial: str
    cgm_model: str
    sensor_id: str
    acked_hub_sequence: int
    last_heartbeat: bytes | None
    last_pump_status: bytes | None
    connected_replica: str | None


def _device(row: object) -> DeviceRow:
    m = dict(row)  # type: ignore[call-overload]
    return DeviceRow(
        device_id=m["device_id"],
        patient_id=m["patient_id"],
        hub_serial=m["hub_serial"],
        software_version=m["software_version"],
        state=m["state"],
        cert_serial=m["cert_serial"],
        enrolled_at=aware(m["enrolled_at"]) or datetime.min.replace(tzinfo=UTC),
        last_seen_at=aware(m["last_seen_at"]),
        pump_model=m["pump_model"],
        pump_serial=m["pump_serial"],
        cgm_model=m["cgm_model"],
        sensor_id=m["sensor_id"],
        acked_hub_sequence=int(m["acked_hub_sequence"]),
        last_heartbeat=m["last_heartbeat"],
        last_pump_status=m["last_pump_status"],
        connected_replica=m["connected_replica"],
    )


def add_device(
    session: Session,
    *,
    device_id: str,
    patient_id: str,
    hub_serial: str,
    software_version: str,
    state: int,
    cert_serial: str,
    cert_not_after: datetime,
    now: datetime,
) -> None:
    session.execute(
        devices.insert().values(
            device_id=device_id,
            patient_id=patient_id,
            hub_serial=hub_serial,
            software_version=software_version,
            state=state,
            cert_serial=cert_serial,
            cert_not_after=cert_not_after,
            enrolled_at=now,
            pump_model="",
            pump_serial="",
            cgm_model="",
            sensor_id="",
            acked_hub_sequence=0,
        )
    )


def get_device(session: Session, device_id: str) -> DeviceRow | None:
    row = (
        session.execute(select(devices).where(devices.c.device_id == device_id)).mappings().first()
    )
    return None if row is None else _device(row)


def devices_of(session: Session, patient_id: str) -> list[DeviceRow]:
    rows = session.execute(
        select(devices)
        .where(devices.c.patient_id == patient_id)
        .order_by(devices.c.enrolled_at.desc())
    ).mappings()
    return [_device(r) for r in rows]


def update_device(session: Session, device_id: str, **values: object) -> None:
    session.execute(update(devices).where(devices.c.device_id == device_id).values(**values))


def advance_acked(session: Session, device_id: str, hub_sequence: int, now: datetime) -> bool:
    """Record `hub_sequence` as stored; False (nothing changed) if it is not above the last."""
    result = session.execute(
        update(devices)
        .where(devices.c.device_id == device_id, devices.c.acked_hub_sequence < hub_sequence)
        .values(acked_hub_sequence=hub_sequence, last_seen_at=now)
    )
    return getattr(result, "rowcount", 0) == 1


def is_revoked(session: Session, cert_serial: str) -> bool:
    row = session.execute(
        select(revoked_certificates.c.cert_serial).where(
            revoked_certificates.c.cert_serial == cert_serial
        )
    ).first()
    return row is not None


def revoked_among(session: Session, cert_serials: Sequence[str]) -> set[str]:
    """Which of these certificate serials are on the revocation list."""
    found: set[str] = set()
    for start in range(0, len(cert_serials), 500):
        chunk = list(cert_serials[start : start + 500])
        rows = session.execute(
            select(revoked_certificates.c.cert_serial).where(
                revoked_certificates.c.cert_serial.in_(chunk)
            )
        )
        found.update(str(r[0]) for r in rows)
    return found


def revoke(
    session: Session,
    device: DeviceRow,
    *,
    reason: str,
    requested_by: str,
    now: datetime,
    state: int,
) -> None:
    if not is_revoked(session, device.cert_serial):
        session.execute(
            revoked_certificates.insert().values(
                cert_serial=device.cert_serial,
                device_id=device.device_id,
                revoked_at=now,
                reason=reason,
                requested_by=requested_by,
            )
        )
    update_device(session, device.device_id, state=state)


# ------------------------------------------------------------------ commands
@dataclass(frozen=True)
class CommandRow:
    command_id: str
    device_id: str
    patient_id: str
    sequence: int
    state: int
    expires_at: datetime
    signed_command: bytes
    delivered_by_replica: str | None
    delivered_insulin_u: float


def _command(row: object) -> CommandRow:
    m = dict(row)  # type: ignore[call-overload]
    expires_at = aware(m["expires_at"])
    assert expires_at is not None
    return CommandRow(
        command_id=m["command_id"],
        device_id=m["device_id"],
        patient_id=m["patient_id"],
        sequence=int(m["sequence"]),
        state=int(m["state"]),
        expires_at=expires_at,
        signed_command=bytes(m["signed_command"]),
        delivered_by_replica=m["delivered_by_replica"],
        delivered_insulin_u=float(m["delivered_insulin_u"]),
    )


def get_command(session: Session, command_id: str) -> CommandRow | None:
    row = (
        session.execute(select(commands).where(commands.c.command_id == command_id))
        .mappings()
        .first()
    )
    return None if row is None else _command(row)


def add_command(
    session: Session,
    *,
    command_id: str,
    device_id: str,
    patient_id: str,
    sequence: int,
    state: int,
    expires_at: datetime,
    signed_command: bytes,
    now: datetime,
) -> None:
    session.execute(
        commands.insert().values(
            command_id=command_id,
            device_id=device_id,
            patient_id=patient_id,
            sequence=sequence,
            state=state,
            expires_at=expires_at,
            signed_command=signed_command,
            delivered_insulin_u=0.0,
            created_at=now,
            updated_at=now,
        )
    )


def add_transition(
    session: Session,
    command_id: str,
    state: int,
    now: datetime,
    *,
    reason: int = 0,
    detail: str = "",
) -> None:
    record_command_transition(state)
    session.execute(
        command_transitions.insert().values(
            command_id=command_id,
            state=state,
            occurred_at=now,
            rejection_reason=reason,
            detail=detail[:500],
        )
    )


def set_command_state(
    session: Session,
    command_id: str,
    state: int,
    now: datetime,
    *,
    only_from: Iterable[int] | None = None,
    **values: object,
) -> bool:
    """Move a command to `state` (only from `only_from`, atomically); True if it moved."""
    stmt = update(commands).where(commands.c.command_id == command_id)
    if only_from is not None:
        stmt = stmt.where(commands.c.state.in_(list(only_from)))
    result = session.execute(stmt.values(state=state, updated_at=now, **values))
    return getattr(result, "rowcount", 0) == 1


def transitions_of(session: Session, command_id: str) -> list[dict[str, object]]:
    rows = session.execute(
        select(command_transitions)
        .where(command_transitions.c.command_id == command_id)
        .order_by(command_transitions.c.id)
    ).mappings()
    return [dict(r) for r in rows]


def offerable_for(session: Session, device_id: str, now: datetime) -> list[CommandRow]:
    """Unexpired QUEUED or SENT commands of a device, in sequence order (SENT ones may never
    have reached the hub: the replica that claimed them can crash before writing them)."""
    rows = session.execute(
        select(commands)
        .where(
            commands.c.device_id == device_id,
            commands.c.state.in_([1, 2]),  # QUEUED, SENT
            commands.c.expires_at > now,
        )
        .order_by(commands.c.sequence)
    ).mappings()
    return [_command(r) for r in rows]


def outstanding_for(session: Session, device_id: str, since: datetime) -> list[CommandRow]:
    """A device's commands handed towards its hub with no final outcome (SENT, RECEIVED,
    UNCERTAIN) that expired after `since`, in sequence order."""
    rows = session.execute(
        select(commands)
        .where(
            commands.c.device_id == device_id,
            commands.c.state.in_([2, 3, 7]),  # SENT, RECEIVED, UNCERTAIN
            commands.c.expires_at > since,
        )
        .order_by(commands.c.sequence)
    ).mappings()
    return [_command(r) for r in rows]


def devices_with_queued(session: Session, device_ids: Sequence[str], now: datetime) -> set[str]:
    """Which of these devices have unexpired QUEUED commands."""
    found: set[str] = set()
    for start in range(0, len(device_ids), 500):
        chunk = list(device_ids[start : start + 500])
        rows = session.execute(
            select(commands.c.device_id)
            .where(
                commands.c.device_id.in_(chunk),
                commands.c.state == 1,  # QUEUED
                commands.c.expires_at > now,
            )
            .distinct()
        )
        found.update(str(r[0]) for r in rows)
    return found


def overdue_in_flight(session: Session, cutoff: datetime, limit: int = 500) -> list[CommandRow]:
    """SENT or RECEIVED commands that expired before `cutoff` with no final outcome."""
    rows = session.execute(
        select(commands)
        .where(commands.c.state.in_([2, 3]), commands.c.expires_at <= cutoff)  # SENT, RECEIVED
        .limit(limit)
    ).mappings()
    return [_command(r) for r in rows]


def expired_queued(session: Session, now: datetime, limit: int = 500) -> list[CommandRow]:
    rows = session.execute(
        select(commands).where(commands.c.state == 1, commands.c.expires_at <= now).limit(limit)
    ).mappings()
    return [_command(r) for r in rows]
