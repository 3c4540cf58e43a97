"""Devices routes (translation only)."""

from __future__ import annotations

from fastapi import APIRouter, status

from gateway.deps import PatientOwner, PatientViewer, RuntimeDep, SessionDep
from gateway.devices import service
from gateway.devices.schemas import DeviceOut, EnrolmentTokenIn, EnrolmentTokenOut

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["devices"])


@router.get("/people/{person_id}/devices")
def devices(ctx: PatientViewer, session: SessionDep) -> list[DeviceOut]:
    return service.list_devices(session, ctx.person_id)


@router.post("/people/{person_id}/devices/enrolment-tokens", status_code=status.HTTP_201_CREATED)
def enrolment_token(
    data: EnrolmentTokenIn, ctx: PatientOwner, session: SessionDep, runtime: RuntimeDep
) -> EnrolmentTokenOut:
    """A one-time token the pump hub presents to enrol (stored hashed, expires)."""
    return service.create_enrolment_token(
        session, runtime.clock, ctx, data, runtime.settings.enrolment_token_ttl_s
    )
