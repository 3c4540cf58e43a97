"""Bolus calculator, two-step remote bolus, forecast and loop status.

Remote bolus, step 1 (`request_bolus`): the dosing engine calculates; the gateway stores the
request (the amount is the recommendation or less, never more) and returns it with the time
by which it must be confirmed (5 min after the calculation, as the engine enforces too).
Step 2 (`confirm_bolus`), by the same caller: under a per-person row lock (`BolusGuard`) the
gateway checks that no other bolus was issued for that person within the decision window,
marks the window taken, and asks the dosing engine to sign and queue the command (idempotent
on the request id). So person, caregivers and clinicians confirming at the same moment get
one bolus; partner tokens never reach these routes (app audience only). Every request and
outcome is in the audit log.

If the engine cannot be reached or does not answer in time, the outcome is unknown: the
request becomes `uncertain`, the window stays taken, and confirming again re-sends the same
request id (the engine returns the first result instead of dosing twice).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Any

from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_gateway_service_pb2 as device_pb
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_engine_service_pb2 as dosing_pb
from langerhans.dosing.v1 import dosing_pb2
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from gateway.access import PatientContext, Role
from gateway.audit.service import record
from gateway.clients.base import run_sync
from gateway.clients.convert import enum_name, opt_time, to_time
from gateway.clients.services import ServiceClients, timestamp
from gateway.deps import end_read_transaction
from gateway.dosing.schemas import (
    BolusBreakdownOut,
    BolusCalculationIn,
    BolusRecommendationOut,
    BolusRequestIn,
    BolusRequestOut,
    BolusWarningOut,
    DeviceStatusOut,
    ForecastLineOut,
    ForecastOut,
    LoopStatusOut,
)
from gateway.errors import (
    AppError,
    Conflict,
    Forbidden,
    GuardrailViolation,
    NotFound,
    ServiceUnavailable,
)
from gateway.models import BolusGuard, BolusRequest
from gateway.runtime import Runtime
from services.runtime.logging import current_request_id

__all__ = [
    "calculate",
    "confirm_bolus",
    "forecast",
    "get_bolus_request",
    "loop_status",
    "request_bolus",
]

_KINDS = {
    "standard": common_pb2.BOLUS_KIND_STANDARD,
    "extended": common_pb2.BOLUS_KIND_EXTENDED,
    "dual_wave": common_pb2.BOLUS_KIND_DUAL_WAVE,
}
_EPS_U = 1e-9


def _calc_request(person_id: str, data: BolusCalculationIn) -> dosing_pb.CalculateBolusRequest:
    request = dosing_pb.CalculateBolusRequest(
        patient_id=person_id,
        carbs_g=data.carbs_g,
        kind=_KINDS[data.kind],
        immediate_pct={"standard": 100.0, "extended": 0.0}.get(data.kind, data.immediate_pct),
        extended_duration_min=data.extended_duration_min,
    )
    if data.glucose_mg_dl is not None:
        request.glucose_mg_dl = data.glucose_mg_dl
    return request


def recommendation_out(rec: dosing_pb.CalculateBolusResponse) -> BolusRecommendationOut:
    b = rec.breakdown
    return BolusRecommendationOut(
        recommended_insulin_u=rec.recommended_insulin_u,
        immediate_insulin_u=rec.immediate_insulin_u,
        extended_insulin_u=rec.extended_insulin_u,
        extended_duration_min=rec.extended_duration_min,
        breakdown=BolusBreakdownOut(
            carb_insulin_u=b.carb_insulin_u,
            correction_insulin_u=b.correction_insulin_u,
            iob_u=b.iob_u,
            carb_ratio_g_per_u=b.carb_ratio_g_per_u,
            isf_mg_dl_per_u=b.isf_mg_dl_per_u,
            target_mg_dl=b.target_mg_dl,
            unlimited_insulin_u=b.unlimited_insulin_u,
        ),
        warnings=[
            BolusWarningOut(
                code=enum_name(dosing_pb.BolusWarningCode, w.code, "BOLUS_WARNING_CODE_"),
                message=w.message,
            )
            for w in rec.warnings
        ],
        glucose_mg_dl=rec.glucose_mg_dl or None,
        reading_id=rec.reading_id or None,
        cob_g=rec.cob_g,
        settings_version=rec.settings_version,
        calculated_at=to_time(rec.calculated_at),
    )


def calculate(
    session: Session, services: ServiceClients, ctx: PatientContext, data: BolusCalculationIn
) -> BolusRecommendationOut:
    end_read_transaction(session)  # no DB lock held while the engine works
    rec = run_sync(
        services.calculate_bolus, _calc_request(ctx.person_id, data), current_request_id()
    )
    return recommendation_out(rec)


def _request_out(row: BolusRequest) -> BolusRequestOut:
    return BolusRequestOut(
        request_id=row.id,
        person_id=row.person_id,
        requested_by=row.requested_by,
        origin="manual" if row.origin == "manual" else "remote",
        status=row.status,  # type: ignore[arg-type]
        kind=row.kind,  # type: ignore[arg-type]
        insulin_u=row.insulin_u,
        immediate_pct=row.immediate_pct,
        extended_duration_min=row.extended_duration_min,
        carbs_g=row.carbs_g,
        recommendation=BolusRecommendationOut.model_validate(row.recommendation),
        expires_at=row.expires_at,
        confirmed_at=row.confirmed_at,
        command_id=row.command_id,
        outcome=row.outcome,
    )


def _origin(ctx: PatientContext) -> str:
    own = ctx.caller.account_id == ctx.person_id and ctx.caller.role is Role.PERSON
    return "manual" if own else "remote"


def request_bolus(
    session: Session,
    runtime: Runtime,
    services: ServiceClients,
    ctx: PatientContext,
    data: BolusRequestIn,
) -> BolusRequestOut:
    end_read_transaction(session)
    rec = run_sync(
        services.calculate_bolus, _calc_request(ctx.person_id, data), current_request_id()
    )
    recommendation = recommendation_out(rec)
    insulin_u = data.insulin_u if data.insulin_u is not None else rec.recommended_insulin_u
    if insulin_u <= _EPS_U:
        raise Conflict(
            "nothing to deliver: the calculator recommends no insulin",
            details=[w.model_dump() for w in recommendation.warnings],
        )
    if insulin_u > rec.recommended_insulin_u + _EPS_U:
        raise GuardrailViolation(
            f"{insulin_u:g} U is more than the recommended {rec.recommended_insulin_u:g} U"
        )
    now = runtime.clock.now()
    calculated_at = min(recommendation.calculated_at, now)
    row = BolusRequest(
        id=str(uuid.uuid4()),
        person_id=ctx.person_id,
        requested_by=ctx.caller.account_id,
        origin=_origin(ctx),
        kind=data.kind,
        insulin_u=insulin_u,
        immediate_pct={"standard": 100.0, "extended": 0.0}.get(data.kind, data.immediate_pct),
        extended_duration_min=data.extended_duration_min,
        carbs_g=data.carbs_g,
        recommendation=recommendation.model_dump(mode="json"),
        calculated_at=recommendation.calculated_at,
        expires_at=calculated_at + timedelta(seconds=runtime.settings.bolus_confirm_ttl_s),
        status="pending",
        created_at=now,
    )
    session.add(row)
    record(
        session,
        runtime.clock,
        action="bolus.requested",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details=_audit_details(row),
    )
    return _request_out(row)


def _audit_details(row: BolusRequest, **extra: Any) -> dict[str, Any]:
    return {
        "request_id": row.id,
        "origin": row.origin,
        "kind": row.kind,
        "insulin_u": row.insulin_u,
        "carbs_g": row.carbs_g,
        **extra,
    }


def _own_request(session: Session, ctx: PatientContext, request_id: str) -> BolusRequest:
    row = session.get(BolusRequest, request_id)
    if row is None or row.person_id != ctx.person_id:
        raise NotFound("no such bolus request")
    return row


def get_bolus_request(session: Session, ctx: PatientContext, request_id: str) -> BolusRequestOut:
    row = _own_request(session, ctx, request_id)
    if ctx.caller.account_id not in (row.requested_by, ctx.person_id):
        raise NotFound("no such bolus request")
    return _request_out(row)


def _lock_guard(session: Session, person_id: str) -> BolusGuard:
    """The person's guard row as stored now, locked for this transaction (created on first
    use). `populate_existing`: a copy from an earlier transaction of this session is stale."""
    guard = session.get(BolusGuard, person_id, with_for_update=True, populate_existing=True)
    if guard is not None:
        return guard
    try:
        with session.begin_nested():
            session.add(BolusGuard(person_id=person_id))
    except IntegrityError:
        pass  # a concurrent first bolus created it; lock theirs
    guard = session.get(BolusGuard, person_id, with_for_update=True, populate_existing=True)
    assert guard is not None
    return guard


def confirm_bolus(
    session: Session,
    runtime: Runtime,
    services: ServiceClients,
    ctx: PatientContext,
    request_id: str,
) -> BolusRequestOut:
    clock = runtime.clock
    row = _own_request(session, ctx, request_id)
    if row.requested_by != ctx.caller.account_id:
        raise Forbidden("only whoever requested this bolus may confirm it")
    if row.status == "issued":
        return _request_out(row)  # a repeated confirmation changes nothing
    if row.status not in ("pending", "uncertain"):
        raise Conflict(f"this bolus request is {row.status}")
    now = clock.now()

    def refuse(status: str, error: AppError) -> AppError:
        row.status = status
        row.outcome = error.message[:500]
        record(
            session,
            clock,
            action="bolus.refused" if status != "expired" else "bolus.expired",
            actor_id=ctx.caller.account_id,
            person_id=ctx.person_id,
            details=_audit_details(row, reason=error.message),
        )
        error.keep_changes = True
        return error

    if row.status == "pending" and now > row.expires_at:
        raise refuse("expired", Conflict("the confirmation window (5 min) has passed"))
    guard = _lock_guard(session, ctx.person_id)
    window = timedelta(seconds=runtime.settings.bolus_decision_window_s)
    if (
        guard.last_issued_at is not None
        and guard.last_request_id != row.id
        and now - guard.last_issued_at < window
    ):
        next_at = (guard.last_issued_at + window).isoformat()
        raise refuse(
            "refused",
            Conflict(
                "a bolus is already in progress or issued for this person in this decision "
                f"window; the next one from {next_at}"
            ),
        )
    previous = (guard.last_issued_at, guard.last_request_id)
    guard.last_issued_at, guard.last_request_id = now, row.id
    row.confirmed_at = row.confirmed_at or now
    # Until the engine answers the outcome is unknown: if this process dies now, the request
    # stays `uncertain` with the window taken, and confirming again re-sends the same id.
    row.status = "uncertain"
    row.outcome = "sent to the dosing engine; no answer yet"
    # The window is claimed and committed before the engine is asked, so no database lock is
    # held during the call: on SQLite the write lock is the whole database's, and holding it
    # for a slow engine queued every other request behind it.
    session.commit()
    command = dosing_pb.IssueManualCommandRequest(
        request_id=row.id,
        patient_id=row.person_id,
        requested_by=ctx.caller.account_id,
        origin=(
            device_pb2.PUMP_COMMAND_ORIGIN_MANUAL
            if row.origin == "manual"
            else device_pb2.PUMP_COMMAND_ORIGIN_REMOTE
        ),
        calculated_at=timestamp(row.calculated_at),
        deliver_bolus=device_pb2.DeliverBolus(
            insulin_u=row.insulin_u,
            kind=_KINDS[row.kind],
            immediate_pct=row.immediate_pct,
            extended_duration_min=row.extended_duration_min,
            automatic=False,
        ),
    )
    try:
        issued = run_sync(services.issue_manual_command, command, current_request_id())
    except ServiceUnavailable as exc:
        row.outcome = "the dosing engine did not answer; confirm again to retry safely"
        record(
            session,
            clock,
            action="bolus.uncertain",
            actor_id=ctx.caller.account_id,
            person_id=ctx.person_id,
            details=_audit_details(row, reason=exc.message),
        )
        exc.keep_changes = True
        raise
    except AppError as exc:
        # Nothing was issued: give the window back, unless someone else holds it by now.
        guard = _lock_guard(session, ctx.person_id)
        if guard.last_request_id == row.id:
            guard.last_issued_at, guard.last_request_id = previous
        raise refuse("refused", exc) from None
    row.status = "issued"
    row.command_id = issued.command_id
    row.outcome = enum_name(device_pb2.PumpCommandState, issued.state, "PUMP_COMMAND_STATE_")
    record(
        session,
        clock,
        action="bolus.issued",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details=_audit_details(row, command_id=issued.command_id),
    )
    return _request_out(row)


def forecast(session: Session, services: ServiceClients, ctx: PatientContext) -> ForecastOut:
    end_read_transaction(session)
    answer = run_sync(services.get_forecast, ctx.person_id, current_request_id())
    has = answer.HasField("forecast")
    f = answer.forecast
    return ForecastOut(
        available=has,
        lines=[
            ForecastLineOut(
                kind=enum_name(dosing_pb2.ForecastKind, line.kind, "FORECAST_KIND_"),
                start_time=to_time(line.start_time),
                interval_min=line.interval_min,
                glucose_mg_dl=list(line.glucose_mg_dl),
            )
            for line in f.lines
        ],
        eventual_glucose_mg_dl=f.eventual_glucose_mg_dl if has else None,
        min_predicted_glucose_mg_dl=f.min_predicted_glucose_mg_dl if has else None,
        min_predicted_at=opt_time(f.min_predicted_at) if has else None,
        iob_u=answer.iob_u,
        cob_g=answer.cob_g,
        reading_id=answer.reading_id or None,
    )


def _reasons(values: Any) -> list[str]:
    return [enum_name(common_pb2.LoopStatusReason, r, "LOOP_STATUS_REASON_") for r in values]


def _device_out(status: device_pb.GetLoopStatusResponse) -> DeviceStatusOut:
    pump = status.last_pump_status if status.HasField("last_pump_status") else None
    return DeviceStatusOut(
        device_id=status.device_id or None,
        hub_connected=status.hub_connected,
        hub_last_seen_at=opt_time(status.hub_last_seen_at),
        pump_last_seen_at=opt_time(status.pump_last_seen_at),
        cgm_last_seen_at=opt_time(status.cgm_last_seen_at),
        reservoir_u=pump.reservoir_u if pump else None,
        battery_pct=pump.battery_pct if pump else None,
        pump_suspended=pump.suspended if pump else None,
        reasons=_reasons(status.reasons),
        summary=status.summary,
    )


def loop_status(session: Session, services: ServiceClients, ctx: PatientContext) -> LoopStatusOut:
    end_read_transaction(session)
    request_id = current_request_id()
    status = run_sync(services.get_loop_status, ctx.person_id, request_id)
    device: DeviceStatusOut | None = None
    note: str | None = None
    try:
        answer = run_sync(services.get_device_status, ctx.person_id, request_id)
        device = _device_out(answer) if answer is not None else None
        note = None if answer is not None else "no device service configured"
    except AppError as exc:  # the dosing side is still worth showing
        note = exc.message
    d = status.last_decision if status.HasField("last_decision") else None
    decided_at: datetime | None = to_time(d.decided_at) if d is not None else None
    return LoopStatusOut(
        looping=status.looping,
        mode=enum_name(common_pb2.LoopMode, status.mode, "LOOP_MODE_"),
        reasons=_reasons(status.reasons),
        summary=status.summary,
        last_enacted_at=opt_time(status.last_enacted_at),
        last_decision_at=decided_at,
        last_decision_id=d.decision_id if d is not None else None,
        iob_u=d.iob_u if d is not None else None,
        cob_g=d.cob_g if d is not None else None,
        eventual_glucose_mg_dl=d.eventual_glucose_mg_dl if d is not None else None,
        device=device,
        device_note=note,
    )
