"""Devices and one-time enrolment tokens.

`consume_enrolment_token` is the internal hand-off for the device gateway: until it calls the
gateway over gRPC it can call this function with a session of the gateway's database. A token
works once, before its expiry, and binds the device to the person who created it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy.orm import Session

from gateway.access import PatientContext
from gateway.audit.service import record
from gateway.devices.repository import DeviceRepository
from gateway.devices.schemas import DeviceOut, EnrolmentTokenIn, EnrolmentTokenOut
from gateway.errors import Unauthenticated
from gateway.models import Device, EnrolmentToken
from gateway.security.secrets import new_opaque_token, sha256_hex
from services.runtime.clock import Clock

__all__ = ["EnrolmentClaim", "consume_enrolment_token", "create_enrolment_token", "list_devices"]


@dataclass(frozen=True)
class EnrolmentClaim:
    person_id: str
    device_id: str
    device_kind: str


def create_enrolment_token(
    session: Session, clock: Clock, ctx: PatientContext, data: EnrolmentTokenIn, ttl_s: int
) -> EnrolmentTokenOut:
    raw = new_opaque_token()
    now = clock.now()
    token = EnrolmentToken(
        id=str(uuid.uuid4()),
        person_id=ctx.person_id,
        device_kind=data.device_kind,
        device_name=data.device_name,
        token_hash=sha256_hex(raw),
        created_by=ctx.caller.account_id,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
        used_at=None,
        device_id=None,
    )
    DeviceRepository(session).add(token)
    record(
        session,
        clock,
        action="device.enrolment_token_created",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details={"token_id": token.id, "device_kind": data.device_kind},
    )
    return EnrolmentTokenOut(token_id=token.id, token=raw, expires_at=token.expires_at)


def consume_enrolment_token(session: Session, clock: Clock, raw_token: str) -> EnrolmentClaim:
    """Redeem a one-time token: creates the device record; the caller commits."""
    repo = DeviceRepository(session)
    token = repo.token_by_hash(sha256_hex(raw_token))
    now = clock.now()
    if token is None or token.used_at is not None or now >= token.expires_at:
        raise Unauthenticated("enrolment token unknown, used or expired")
    device = Device(
        id=str(uuid.uuid4()),
        person_id=token.person_id,
        kind=token.device_kind,
        name=token.device_name,
        enrolled_at=now,
        revoked_at=None,
    )
    repo.add(device)
    token.used_at = now
    token.device_id = device.id
    record(
        session,
        clock,
        action="device.enrolled",
        actor_id=f"device:{device.id}",
        person_id=token.person_id,
        details={"token_id": token.id, "kind": device.kind},
    )
    return EnrolmentClaim(token.person_id, device.id, device.kind)


def list_devices(session: Session, person_id: str) -> list[DeviceOut]:
    return [
        DeviceOut(
            device_id=d.id,
            kind=d.kind,
            name=d.name,
            enrolled_at=d.enrolled_at,
            active=d.revoked_at is None,
        )
        for d in DeviceRepository(session).for_person(person_id)
    ]
