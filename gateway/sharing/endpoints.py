"""Sharing, invitations and clinics routes (translation only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, status

from gateway.deps import CurrentUser, PatientOwner, RuntimeDep, SessionDep
from gateway.sharing import service
from gateway.sharing.schemas import (
    AcceptedOut,
    AcceptIn,
    ClinicIn,
    ClinicMemberIn,
    ClinicOut,
    FollowerPermissions,
    InvitationIn,
    InvitationOut,
    ShareOut,
)

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["sharing"])
Id = Annotated[str, Path(min_length=1, max_length=36)]


@router.post("/people/{person_id}/invitations", status_code=status.HTTP_201_CREATED)
def invite(
    data: InvitationIn, ctx: PatientOwner, session: SessionDep, runtime: RuntimeDep
) -> InvitationOut:
    """Invite a follower with per-follower permissions (the person themself only)."""
    return service.invite_follower(session, runtime, ctx, data.permissions)


@router.post("/invitations/accept")
def accept(
    data: AcceptIn, caller: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> AcceptedOut:
    return service.accept_invitation(session, runtime, caller, data.token)


@router.get("/people/{person_id}/shares")
def shares(ctx: PatientOwner, session: SessionDep) -> list[ShareOut]:
    return service.list_shares(session, ctx)


@router.put("/people/{person_id}/shares/{share_id}")
def update_share(
    share_id: Id,
    data: FollowerPermissions,
    ctx: PatientOwner,
    session: SessionDep,
    runtime: RuntimeDep,
) -> ShareOut:
    return service.update_share(session, runtime, ctx, share_id, data)


@router.delete("/people/{person_id}/shares/{share_id}", status_code=status.HTTP_204_NO_CONTENT)
def revoke_share(share_id: Id, ctx: PatientOwner, session: SessionDep, runtime: RuntimeDep) -> None:
    service.revoke_share(session, runtime, ctx, share_id)


@router.delete("/people/{person_id}/clinics/{clinic_id}", status_code=status.HTTP_204_NO_CONTENT)
def leave_clinic(
    clinic_id: Id, ctx: PatientOwner, session: SessionDep, runtime: RuntimeDep
) -> None:
    service.leave_clinic(session, runtime, ctx, clinic_id)


@router.post("/clinics", status_code=status.HTTP_201_CREATED)
def create_clinic(
    data: ClinicIn, caller: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> ClinicOut:
    clinic = service.create_clinic(session, runtime, caller, data.name)
    return ClinicOut(clinic_id=clinic.id, name=clinic.name)


@router.post("/clinics/{clinic_id}/members", status_code=status.HTTP_204_NO_CONTENT)
def add_member(
    clinic_id: Id,
    data: ClinicMemberIn,
    caller: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
) -> None:
    service.add_clinician(session, runtime, caller, clinic_id, data.email)


@router.post("/clinics/{clinic_id}/invitations", status_code=status.HTTP_201_CREATED)
def invite_patient(
    clinic_id: Id, caller: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> InvitationOut:
    return service.invite_patient_to_clinic(session, runtime, caller, clinic_id)
