"""Alert routes (app API and /partner/v1/alerts); `gateway.alerts.service` decides."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query
from pydantic import AwareDatetime

from gateway.access import PatientContext, Permission
from gateway.alerts import service
from gateway.alerts.schemas import (
    AcknowledgeIn,
    AlertOut,
    AlertPage,
    PartnerAlertsOut,
    SnoozeIn,
    SnoozeOut,
)
from gateway.clients.deps import ServicesDep
from gateway.deps import PatientViewer, RuntimeDep, SessionDep, end_read_transaction, patient_access
from gateway.errors import InvalidRequest
from gateway.partner.deps import PartnerCaller, partner_scope

__all__ = ["partner_router", "router"]

router = APIRouter(prefix="/api/v1/people/{person_id}/alerts", tags=["alerts"])
partner_router = APIRouter(prefix="/partner/v1", tags=["partner API"])

# Acting on an alert (acknowledge, snooze) needs the 'receive alerts' permission.
PatientAlertee = Annotated[PatientContext, Depends(patient_access(Permission.RECEIVE_ALERTS))]
AlertsReader = Annotated[PartnerCaller, Depends(partner_scope("alerts.read"))]
AlertId = Annotated[str, Path(min_length=1, max_length=64)]
MAX_PARTNER_RANGE = timedelta(days=30)


@router.get("")
def list_alerts(
    *,
    ctx: PatientViewer,
    session: SessionDep,
    services: ServicesDep,
    state: Annotated[str, Query(pattern="^(active|all)$")] = "active",
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    page_token: Annotated[str, Query(max_length=500)] = "",
) -> AlertPage:
    return service.list_alerts(
        session, services, ctx, active_only=state == "active", limit=limit, page_token=page_token
    )


@router.post("/{alert_id}/acknowledge")
def acknowledge(
    *,
    alert_id: AlertId,
    data: AcknowledgeIn,
    ctx: PatientAlertee,
    session: SessionDep,
    runtime: RuntimeDep,
    services: ServicesDep,
) -> AlertOut:
    return service.acknowledge(
        session, runtime=runtime, services=services, ctx=ctx, alert_id=alert_id, note=data.note
    )


@router.post("/{alert_id}/snooze")
def snooze(
    *,
    alert_id: AlertId,
    data: SnoozeIn,
    ctx: PatientAlertee,
    session: SessionDep,
    runtime: RuntimeDep,
    services: ServicesDep,
) -> SnoozeOut:
    return service.snooze(
        session,
        runtime=runtime,
        services=services,
        ctx=ctx,
        alert_id=alert_id,
        duration_min=data.duration_min,
    )


@partner_router.get("/alerts")
def partner_alerts(
    *,
    caller: AlertsReader,
    runtime: RuntimeDep,
    session: SessionDep,
    services: ServicesDep,
    startDate: Annotated[AwareDatetime | None, Query()] = None,  # noqa: N803 - Dexcom names
    endDate: Annotated[AwareDatetime | None, Query()] = None,  # noqa: N803
    limit: Annotated[int, Query(ge=1, le=500)] = 500,
) -> PartnerAlertsOut:
    end: datetime = endDate or runtime.clock.now() + timedelta(minutes=5)
    start: datetime = startDate or end - timedelta(hours=24)
    if start >= end or end - start > MAX_PARTNER_RANGE:
        raise InvalidRequest("startDate must precede endDate by at most 30 days")
    end_read_transaction(session)
    return service.partner_alerts(services, caller.person_id, start, end, limit)
