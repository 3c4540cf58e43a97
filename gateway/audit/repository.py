"""Storage of the audit hash chain."""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import AuditRow

__all__ = ["AuditRepository"]


class AuditRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def last(self) -> AuditRow | None:
        return self._session.scalars(
            select(AuditRow).order_by(AuditRow.seq.desc()).limit(1)
        ).first()

    def add(self, row: AuditRow) -> None:
        self._session.add(row)
        self._session.flush()

    def iter_in_order(self, batch: int = 1000) -> Iterator[AuditRow]:
        yield from self._session.scalars(
            select(AuditRow).order_by(AuditRow.seq).execution_options(yield_per=batch)
        )

    def for_person(self, person_id: str, limit: int) -> list[AuditRow]:
        return list(
            self._session.scalars(
                select(AuditRow)
                .where(AuditRow.person_id == person_id)
                .order_by(AuditRow.seq.desc())
                .limit(limit)
            )
        )
