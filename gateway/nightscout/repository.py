"""Storage queries for Nightscout-uploaded documents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from gateway.models import NsDeviceStatus, NsEntry, NsProfile, NsSecret, NsToken, NsTreatment

__all__ = ["NightscoutRepository"]

T = TypeVar("T", NsEntry, NsTreatment, NsDeviceStatus, NsProfile)


class NightscoutRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def add(self, obj: object) -> None:
        self._session.add(obj)
        self._session.flush()

    def find(
        self,
        model: type[T],
        person_id: str,
        conditions: Sequence[ColumnElement[bool]],
        order_by: InstrumentedAttribute[Any],
        limit: int,
    ) -> list[T]:
        stmt = (
            select(model)
            .where(model.person_id == person_id, *conditions)
            .order_by(order_by.desc())
            .limit(limit)
        )
        return list(self._session.scalars(stmt))

    def entry(self, person_id: str, type_: str, date_ms: int) -> NsEntry | None:
        return self._session.scalars(
            select(NsEntry).where(
                NsEntry.person_id == person_id, NsEntry.type == type_, NsEntry.date_ms == date_ms
            )
        ).first()

    def treatment_by_identifier(self, person_id: str, identifier: str) -> NsTreatment | None:
        return self._session.scalars(
            select(NsTreatment).where(
                NsTreatment.person_id == person_id, NsTreatment.identifier == identifier
            )
        ).first()

    def treatment(self, person_id: str, created_at_ms: int, event_type: str) -> NsTreatment | None:
        return self._session.scalars(
            select(NsTreatment).where(
                NsTreatment.person_id == person_id,
                NsTreatment.created_at_ms == created_at_ms,
                NsTreatment.event_type == event_type,
            )
        ).first()

    def devicestatus(
        self, person_id: str, created_at_ms: int, device: str
    ) -> NsDeviceStatus | None:
        return self._session.scalars(
            select(NsDeviceStatus).where(
                NsDeviceStatus.person_id == person_id,
                NsDeviceStatus.created_at_ms == created_at_ms,
                NsDeviceStatus.device == device,
            )
        ).first()

    def profile(self, person_id: str, start_ms: int) -> NsProfile | None:
        return self._session.scalars(
            select(NsProfile).where(
                NsProfile.person_id == person_id, NsProfile.start_ms == start_ms
            )
        ).first()

    def secret(self, person_id: str) -> NsSecret | None:
        return self._session.get(NsSecret, person_id)

    def tokens(self, person_id: str) -> list[NsToken]:
        return list(
            self._session.scalars(
                select(NsToken).where(NsToken.person_id == person_id, NsToken.revoked_at.is_(None))
            )
        )

    def token(self, person_id: str, token_id: str) -> NsToken | None:
        return self._session.scalars(
            select(NsToken).where(NsToken.person_id == person_id, NsToken.id == token_id)
        ).first()
