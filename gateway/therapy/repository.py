"""Storage queries for therapy settings versions."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import TherapySettingsVersion
from gateway.therapy.loop_stages import ModeSpell

__all__ = ["TherapyRepository"]


class TherapyRepository:
    def __init__(self, session: Session) -> None:
        self._session = session

    def current(self, person_id: str) -> TherapySettingsVersion | None:
        return self._session.scalars(
            select(TherapySettingsVersion)
            .where(TherapySettingsVersion.person_id == person_id)
            .order_by(TherapySettingsVersion.version.desc())
            .limit(1)
        ).first()

    def history(self, person_id: str, limit: int) -> list[TherapySettingsVersion]:
        return list(
            self._session.scalars(
                select(TherapySettingsVersion)
                .where(TherapySettingsVersion.person_id == person_id)
                .order_by(TherapySettingsVersion.version.desc())
                .limit(limit)
            )
        )

    def mode_history(self, person_id: str) -> list[ModeSpell]:
        """Every version's loop mode and when it was set, oldest first."""
        rows = self._session.execute(
            select(TherapySettingsVersion.settings, TherapySettingsVersion.changed_at)
            .where(TherapySettingsVersion.person_id == person_id)
            .order_by(TherapySettingsVersion.version)
        )
        return [ModeSpell(str(doc.get("loop_mode", "open_loop")), at) for doc, at in rows]

    def add(self, row: TherapySettingsVersion) -> None:
        self._session.add(row)
        self._session.flush()
