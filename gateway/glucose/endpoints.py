"""Glucose routes: paged, time-ranged reads through the `GlucoseSource` interface.

The route runs on the event loop (no SessionDep, no worker thread when the answer is
remembered) and resolves no dependencies: it calls the access check itself
(`deps.cached_patient_access`, view permission) and the body comes from `GlucosePages` as
ready JSON. The response shape is `GlucosePage`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response
from pydantic import AwareDatetime

from gateway.access import Permission
from gateway.deps import BEARER_SECURITY, access_guard, cached_patient_access
from gateway.errors import InvalidRequest
from gateway.glucose.pages import GlucosePages
from gateway.glucose.schemas import GlucosePage
from gateway.glucose.source import NightscoutEntriesSource
from gateway.runtime import Runtime

__all__ = ["MAX_RANGE", "glucose_pages", "router"]

router = APIRouter(prefix="/api/v1", tags=["glucose"])
MAX_RANGE = timedelta(days=90)


def glucose_pages(app: Any) -> GlucosePages:
    """The app's page builder (one per app, made on first use)."""
    pages = getattr(app.state, "glucose_pages", None)
    if pages is None:
        runtime: Runtime = app.state.runtime
        guard = access_guard(app)
        read_source = None
        if isinstance(runtime.glucose, NightscoutEntriesSource):
            read_source = NightscoutEntriesSource(guard.read_sessions)
        pages = GlucosePages(runtime.glucose, guard.watch, read_source)
        app.state.glucose_pages = pages
    assert isinstance(pages, GlucosePages)
    return pages


@router.get(
    "/people/{person_id}/glucose", response_model=GlucosePage, openapi_extra=BEARER_SECURITY
)
async def glucose(
    *,
    person_id: Annotated[str, Path(min_length=1, max_length=36)],
    request: Request,
    start: Annotated[
        AwareDatetime | None, Query(description="inclusive; default end - 24 h")
    ] = None,
    end: Annotated[AwareDatetime | None, Query(description="exclusive; default now")] = None,
    limit: Annotated[int, Query(ge=1, le=2000)] = 288,
) -> Response:
    ctx = await cached_patient_access(request, person_id, Permission.VIEW)
    runtime: Runtime = request.app.state.runtime
    end_at: datetime = end or runtime.clock.now() + timedelta(minutes=5)
    start_at: datetime = start or end_at - timedelta(hours=24)
    if start_at >= end_at or end_at - start_at > MAX_RANGE:
        raise InvalidRequest("start must be before end, and the range at most 90 days")
    version = getattr(request.state, "data_version", None)
    body = await glucose_pages(request.app).page(ctx.person_id, start_at, end_at, limit, version)
    return Response(body, media_type="application/json")
