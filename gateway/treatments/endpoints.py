"""Treatment routes (translation only)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status
from pydantic import AwareDatetime

from gateway.deps import PatientTreater, PatientViewer, RuntimeDep, SessionDep
from gateway.treatments import service
from gateway.treatments.schemas import TreatmentIn, TreatmentOut

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["treatments"])


@router.post("/people/{person_id}/treatments", status_code=status.HTTP_201_CREATED)
def record(
    data: Annotated[TreatmentIn, Body()],
    ctx: PatientTreater,
    session: SessionDep,
    runtime: RuntimeDep,
    response: Response,
) -> TreatmentOut:
    """Record carbs or a bolus (standard, extended, dual-wave). Idempotent on client_ref."""
    out, created = service.record_treatment(session, runtime.clock, ctx, data)
    if not created:
        response.status_code = status.HTTP_200_OK
    return out


@router.get("/people/{person_id}/treatments")
def list_treatments(
    *,
    ctx: PatientViewer,
    session: SessionDep,
    runtime: RuntimeDep,
    start: Annotated[AwareDatetime | None, Query()] = None,
    end: Annotated[AwareDatetime | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[TreatmentOut]:
    end_at: datetime = end or runtime.clock.now() + timedelta(minutes=5)
    start_at: datetime = start or end_at - timedelta(days=1)
    return service.list_treatments(session, ctx.person_id, start_at, end_at, limit)
