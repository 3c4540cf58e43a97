"""Glucose routes: paged, time-ranged reads through the `GlucoseSource` interface."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime

from gateway.deps import PatientViewer, RuntimeDep, SessionDep, end_read_transaction
from gateway.errors import InvalidRequest
from gateway.glucose.schemas import GlucosePage, GlucoseReadingOut

__all__ = ["MAX_RANGE", "router"]

router = APIRouter(prefix="/api/v1", tags=["glucose"])
MAX_RANGE = timedelta(days=90)


@router.get("/people/{person_id}/glucose")
def glucose(
    *,
    ctx: PatientViewer,
    runtime: RuntimeDep,
    session: SessionDep,
    start: Annotated[
        AwareDatetime | None, Query(description="inclusive; default end - 24 h")
    ] = None,
    end: Annotated[AwareDatetime | None, Query(description="exclusive; default now")] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 288,
) -> GlucosePage:
    end_at: datetime = end or runtime.clock.now() + timedelta(minutes=5)
    start_at: datetime = start or end_at - timedelta(hours=24)
    if start_at >= end_at or end_at - start_at > MAX_RANGE:
        raise InvalidRequest("start must be before end, and the range at most 90 days")
    end_read_transaction(session)
    readings = runtime.glucose.readings(ctx.person_id, start_at, end_at, limit)
    return GlucosePage(
        readings=[GlucoseReadingOut(**r.__dict__) for r in readings],
        next_end=readings[-1].time if len(readings) == limit else None,
    )
