"""Dosing routes: one line of intent each; `gateway.dosing.service` decides."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from gateway.clients.deps import ServicesDep
from gateway.deps import PatientTreater, PatientViewer, RuntimeDep, SessionDep
from gateway.dosing import service
from gateway.dosing.schemas import (
    BolusCalculationIn,
    BolusRecommendationOut,
    BolusRequestIn,
    BolusRequestOut,
    ForecastOut,
    LoopStatusOut,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/people/{person_id}", tags=["dosing"])
RequestId = Annotated[str, Path(min_length=36, max_length=36)]


@router.post("/bolus-calculator")
def bolus_calculator(
    *, data: BolusCalculationIn, ctx: PatientViewer, session: SessionDep, services: ServicesDep
) -> BolusRecommendationOut:
    """Recommend a bolus (recommendation only: nothing is delivered)."""
    return service.calculate(session, services, ctx, data)


@router.post("/bolus-requests", status_code=status.HTTP_201_CREATED)
def request_bolus(
    *,
    data: BolusRequestIn,
    ctx: PatientTreater,
    session: SessionDep,
    runtime: RuntimeDep,
    services: ServicesDep,
) -> BolusRequestOut:
    """Step 1: calculate and hold a bolus for confirmation (within 5 min, by the same caller)."""
    return service.request_bolus(session, runtime, services, ctx, data)


@router.get("/bolus-requests/{request_id}")
def get_bolus_request(
    *, request_id: RequestId, ctx: PatientTreater, session: SessionDep
) -> BolusRequestOut:
    return service.get_bolus_request(session, ctx, request_id)


@router.post("/bolus-requests/{request_id}/confirm")
def confirm_bolus(
    *,
    request_id: RequestId,
    ctx: PatientTreater,
    session: SessionDep,
    runtime: RuntimeDep,
    services: ServicesDep,
) -> BolusRequestOut:
    """Step 2: the dosing engine signs and queues it; at most one per person per window."""
    return service.confirm_bolus(session, runtime, services, ctx, request_id)


@router.get("/forecast")
def forecast(ctx: PatientViewer, session: SessionDep, services: ServicesDep) -> ForecastOut:
    return service.forecast(session, services, ctx)


@router.get("/loop-status")
def loop_status(ctx: PatientViewer, session: SessionDep, services: ServicesDep) -> LoopStatusOut:
    return service.loop_status(session, services, ctx)
