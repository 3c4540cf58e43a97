"""Storage queries for treatment records."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import Treatment

__all__ = ["TreatmentRepository"]


class TreatmentRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def by_client_ref(self, person_id: str, client_ref: str) -> Treatment | None:
        return self._session.scalars(
            select(Treatment).where(
                Treatment.person_id == person_id, Treatment.client_ref == client_ref
            )
        ).first()

    def add(self, row: Treatment) -> None:
        self._session.add(row)
        self._session.flush()

    def between(
        self, person_id: str, start: datetime, end: datetime, limit: int
    ) -> list[Treatment]:
        return list(
            self._session.scalars(
                select(Treatment)
                .where(
                    Treatment.person_id == person_id,
                    Treatment.occurred_at >= start,
                    Treatment.occurred_at < end,
                )
                .order_by(Treatment.occurred_at.desc())
                .limit(limit)
            )
        )
