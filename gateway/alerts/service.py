"""Alerts: list, acknowledge, snooze (checked against the alert's person), partner records."""

from __future__ import annotations

from datetime import datetime

from langerhans.alerts.v1 import alerts_pb2
from langerhans.alerts.v1 import alerts_service_pb2 as pb
from langerhans.common.v1 import common_pb2
from sqlalchemy.orm import Session

from gateway.access import PatientContext
from gateway.alerts.schemas import (
    AlertOut,
    AlertPage,
    PartnerAlertRecord,
    PartnerAlertsOut,
    SnoozeOut,
)
from gateway.audit.service import record
from gateway.clients.base import run_sync
from gateway.clients.convert import enum_name, opt_time
from gateway.clients.services import ServiceClients, timestamp
from gateway.deps import end_read_transaction
from gateway.errors import NotFound
from gateway.runtime import Runtime
from services.runtime.logging import current_request_id

__all__ = ["acknowledge", "alert_out", "list_alerts", "partner_alerts", "snooze"]

ACTIVE_STATES = (
    alerts_pb2.ALERT_STATE_RAISED,
    alerts_pb2.ALERT_STATE_NOTIFIED,
    alerts_pb2.ALERT_STATE_SNOOZED,
)


def alert_out(a: alerts_pb2.Alert) -> AlertOut:
    return AlertOut(
        alert_id=a.alert_id,
        person_id=a.patient_id,
        type=enum_name(alerts_pb2.AlertType, a.type, "ALERT_TYPE_"),
        severity=enum_name(alerts_pb2.AlertSeverity, a.severity, "ALERT_SEVERITY_"),
        state=enum_name(alerts_pb2.AlertState, a.state, "ALERT_STATE_"),
        title=a.title,
        message=a.message,
        glucose_mg_dl=a.glucose_mg_dl if a.HasField("glucose_mg_dl") else None,
        raised_at=opt_time(a.raised_at),
        updated_at=opt_time(a.updated_at),
        acknowledged_at=opt_time(a.acknowledged_at),
        acknowledged_by=a.acknowledged_by or None,
        snoozed_until=opt_time(a.snoozed_until),
        resolved_at=opt_time(a.resolved_at),
        escalation_tier=enum_name(alerts_pb2.EscalationTier, a.escalation_tier, "ESCALATION_TIER_"),
    )


def _request(
    person_id: str, active_only: bool, start: datetime | None, end: datetime | None, limit: int
) -> pb.ListAlertsRequest:
    request = pb.ListAlertsRequest(patient_id=person_id, page_size=limit)
    if active_only:
        request.states.extend(ACTIVE_STATES)
    if start is not None and end is not None:
        request.range.CopyFrom(
            common_pb2.TimeRange(start_time=timestamp(start), end_time=timestamp(end))
        )
    return request


def list_alerts(
    session: Session,
    services: ServiceClients,
    ctx: PatientContext,
    *,
    active_only: bool,
    limit: int,
    page_token: str,
) -> AlertPage:
    end_read_transaction(session)
    request = _request(ctx.person_id, active_only, None, None, limit)
    request.page_token = page_token
    page = run_sync(services.list_alerts, request, current_request_id())
    return AlertPage(
        alerts=[alert_out(a) for a in page.alerts if a.patient_id == ctx.person_id],
        next_page_token=page.next_page_token or None,
    )


def _check_alert(services: ServiceClients, ctx: PatientContext, alert_id: str) -> None:
    found = run_sync(services.get_alert, alert_id, current_request_id())
    if found.alert.patient_id != ctx.person_id:
        raise NotFound("no such alert")  # someone else's alert is not probeable


def acknowledge(
    session: Session,
    *,
    runtime: Runtime,
    services: ServiceClients,
    ctx: PatientContext,
    alert_id: str,
    note: str,
) -> AlertOut:
    end_read_transaction(session)
    _check_alert(services, ctx, alert_id)
    done = run_sync(
        services.acknowledge_alert, alert_id, ctx.caller.account_id, note, current_request_id()
    )
    record(
        session,
        runtime.clock,
        action="alert.acknowledged",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details={"alert_id": alert_id, "note": note},
    )
    return alert_out(done.alert)


def snooze(
    session: Session,
    *,
    runtime: Runtime,
    services: ServiceClients,
    ctx: PatientContext,
    alert_id: str,
    duration_min: int,
) -> SnoozeOut:
    end_read_transaction(session)
    _check_alert(services, ctx, alert_id)
    done = run_sync(
        services.snooze_alert, alert_id, ctx.caller.account_id, duration_min, current_request_id()
    )
    record(
        session,
        runtime.clock,
        action="alert.snoozed",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details={"alert_id": alert_id, "duration_min": duration_min, "capped": done.capped},
    )
    return SnoozeOut(alert=alert_out(done.alert), capped=done.capped)


def partner_alerts(
    services: ServiceClients, person_id: str, start: datetime, end: datetime, limit: int
) -> PartnerAlertsOut:
    page = run_sync(
        services.list_alerts,
        _request(person_id, False, start, end, min(limit, 500)),
        current_request_id(),
    )
    return PartnerAlertsOut(
        userId=person_id,
        records=[
            PartnerAlertRecord(
                recordId=a.alert_id,
                systemTime=opt_time(a.raised_at),
                displayTime=opt_time(a.raised_at),
                alertName=enum_name(alerts_pb2.AlertType, a.type, "ALERT_TYPE_"),
                alertState=enum_name(alerts_pb2.AlertState, a.state, "ALERT_STATE_"),
                severity=enum_name(alerts_pb2.AlertSeverity, a.severity, "ALERT_SEVERITY_"),
                value=a.glucose_mg_dl if a.HasField("glucose_mg_dl") else None,
            )
            for a in page.alerts
            if a.patient_id == person_id
        ],
    )
