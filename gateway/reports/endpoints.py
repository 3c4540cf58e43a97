"""AGP report routes: JSON, PNG and PDF of the same report (view permission)."""

from __future__ import annotations

from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fastapi import APIRouter, Query, Response

from gateway.accounts.repository import AccountRepository
from gateway.deps import PatientViewer, RuntimeDep, SessionDep, end_read_transaction
from gateway.errors import InvalidRequest, NotFound
from gateway.reports.agp import AgpReport, build_agp
from gateway.reports.render import render_pdf, render_png
from gateway.reports.schemas import AgpReportOut

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["reports"])

Days = Annotated[int, Query(ge=1, le=90, description="whole local days ending today")]
Tz = Annotated[
    str, Query(min_length=1, max_length=64, description="IANA time zone for time of day")
]
# Health data: never kept by shared caches or the browser's disk cache.
NO_STORE = {"Cache-Control": "no-store"}


def _report(
    ctx: PatientViewer, runtime: RuntimeDep, session: SessionDep, days: Days, tz: Tz
) -> AgpReport:
    try:
        zone = ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidRequest(f"unknown time zone {tz!r}") from exc
    account = AccountRepository(session).get(ctx.person_id)
    if account is None:
        raise NotFound("no such person, or no access")
    name = account.display_name
    end_read_transaction(session)
    return build_agp(
        runtime.glucose,
        ctx.person_id,
        display_name=name,
        now=runtime.clock.now(),
        days=days,
        tz=zone,
    )


@router.get("/people/{person_id}/reports/agp")
def agp_json(
    ctx: PatientViewer, runtime: RuntimeDep, session: SessionDep, days: Days = 14, tz: Tz = "UTC"
) -> AgpReportOut:
    return AgpReportOut.model_validate(_report(ctx, runtime, session, days, tz))


@router.get(
    "/people/{person_id}/reports/agp.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}, "description": "percentiles and daily traces"}},
)
def agp_png(
    ctx: PatientViewer, runtime: RuntimeDep, session: SessionDep, days: Days = 14, tz: Tz = "UTC"
) -> Response:
    png = render_png(_report(ctx, runtime, session, days, tz))
    return Response(png, media_type="image/png", headers=NO_STORE)


@router.get(
    "/people/{person_id}/reports/agp.pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "one-page AGP report"}},
)
def agp_pdf(
    ctx: PatientViewer, runtime: RuntimeDep, session: SessionDep, days: Days = 14, tz: Tz = "UTC"
) -> Response:
    report = _report(ctx, runtime, session, days, tz)
    pdf = render_pdf(report)
    filename = f"agp-{report.start:%Y%m%d}-{report.end:%Y%m%d}.pdf"
    return Response(
        pdf,
        media_type="application/pdf",
        headers={**NO_STORE, "Content-Disposition": f'inline; filename="{filename}"'},
    )
