"""Versioned therapy settings: every change is a new immutable version with who and why."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from gateway.access import PatientContext, Role
from gateway.audit.service import record
from gateway.errors import Conflict, NotFound
from gateway.models import TherapySettingsVersion
from gateway.therapy.events import announce
from gateway.therapy.loop_stages import check_loop_mode_change
from gateway.therapy.repository import TherapyRepository
from gateway.therapy.schemas import (
    TherapySettings,
    TherapySettingsIn,
    TherapySettingsOut,
    TherapySettingsVersionOut,
)
from services.runtime.clock import Clock

__all__ = ["change_settings", "current_settings", "settings_history"]


def _out(row: TherapySettingsVersion) -> TherapySettingsOut:
    return TherapySettingsOut(
        person_id=row.person_id,
        version=row.version,
        settings=TherapySettings.model_validate(row.settings),
        changed_by=row.changed_by,
        changed_at=row.changed_at,
        reason=row.reason,
    )


def _changed_fields(before: dict[str, object] | None, after: dict[str, object]) -> list[str]:
    if before is None:
        return sorted(after)
    return sorted(k for k in after if before.get(k) != after.get(k))


def current_settings(session: Session, person_id: str) -> TherapySettingsOut:
    row = TherapyRepository(session).current(person_id)
    if row is None:
        raise NotFound("no therapy settings yet")
    return _out(row)


def change_settings(
    session: Session, clock: Clock, ctx: PatientContext, data: TherapySettingsIn
) -> TherapySettingsOut:
    repo = TherapyRepository(session)
    current = repo.current(ctx.person_id)
    current_version = current.version if current is not None else 0
    if data.expected_version != current_version:
        raise Conflict(
            f"settings changed meanwhile: now at version {current_version}, "
            f"change was based on {data.expected_version}"
        )
    check_loop_mode_change(
        repo.mode_history(ctx.person_id),
        data.settings.loop_mode,
        clock.now(),
        supervised=ctx.caller.role == Role.CLINICIAN,
    )
    new_doc = data.settings.model_dump(mode="json")
    row = TherapySettingsVersion(
        id=str(uuid.uuid4()),
        person_id=ctx.person_id,
        version=current_version + 1,
        settings=new_doc,
        changed_by=ctx.caller.account_id,
        changed_at=clock.now(),
        reason=data.reason,
    )
    repo.add(row)
    # published after this request's transaction commits (outbox), never before
    announce(session, clock, row)
    record(
        session,
        clock,
        action="therapy_settings.changed",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details={
            "version": row.version,
            "changed_fields": _changed_fields(current.settings if current else None, new_doc),
            "before": current.settings if current else None,
            "after": new_doc,
            "reason": data.reason,
        },
    )
    return _out(row)


def settings_history(
    session: Session, person_id: str, limit: int
) -> list[TherapySettingsVersionOut]:
    rows = TherapyRepository(session).history(person_id, limit + 1)
    out: list[TherapySettingsVersionOut] = []
    for i, row in enumerate(rows[:limit]):
        previous = rows[i + 1].settings if i + 1 < len(rows) else None
        out.append(
            TherapySettingsVersionOut(
                **_out(row).model_dump(),
                changed_fields=_changed_fields(previous, row.settings),
            )
        )
    return out
