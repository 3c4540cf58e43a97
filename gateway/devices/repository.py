"""Storage queries for devices and enrolment tokens."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import Device, EnrolmentToken

__all__ = ["DeviceRepository"]


class DeviceRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, obj: object) -> None:
        self._session.add(obj)
        self._session.flush()

    def for_person(self, person_id: str) -> list[Device]:
        return list(
            self._session.scalars(
                select(Device).where(Device.person_id == person_id).order_by(Device.enrolled_at)
            )
        )

    def token_by_hash(self, token_hash: str) -> EnrolmentToken | None:
        return self._session.scalars(
            select(EnrolmentToken).where(EnrolmentToken.token_hash == token_hash)
        ).first()
