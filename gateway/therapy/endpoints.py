"""Therapy settings routes (translation only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from gateway.deps import PatientSettingsEditor, PatientViewer, RuntimeDep, SessionDep
from gateway.therapy import service
from gateway.therapy.schemas import (
    TherapySettingsIn,
    TherapySettingsOut,
    TherapySettingsVersionOut,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["therapy settings"])


@router.get("/people/{person_id}/therapy-settings")
def current(ctx: PatientViewer, session: SessionDep) -> TherapySettingsOut:
    return service.current_settings(session, ctx.person_id)


@router.put("/people/{person_id}/therapy-settings")
def change(
    data: TherapySettingsIn, ctx: PatientSettingsEditor, session: SessionDep, runtime: RuntimeDep
) -> TherapySettingsOut:
    """New version of the settings (guardrails and age-group hard limits enforced)."""
    return service.change_settings(session, runtime.clock, ctx, data)


@router.get("/people/{person_id}/therapy-settings/history")
def history(
    ctx: PatientViewer,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[TherapySettingsVersionOut]:
    return service.settings_history(session, ctx.person_id, limit)
