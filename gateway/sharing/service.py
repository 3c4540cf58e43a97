"""Sharing decisions: invitations, follower permissions, clinic links."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Literal

from sqlalchemy.orm import Session

from gateway.access import Caller, PatientContext, Role
from gateway.accounts.repository import AccountRepository
from gateway.audit.service import record
from gateway.errors import Conflict, Forbidden, InvalidRequest, NotFound
from gateway.models import Clinic, ClinicMembership, ClinicPatient, Invitation, Share
from gateway.runtime import Runtime
from gateway.security.secrets import new_opaque_token, sha256_hex
from gateway.sharing.repository import SharingRepository
from gateway.sharing.schemas import (
    AcceptedOut,
    FollowerPermissions,
    InvitationOut,
    ShareOut,
)

__all__ = [
    "accept_invitation",
    "add_clinician",
    "create_clinic",
    "invite_follower",
    "invite_patient_to_clinic",
    "leave_clinic",
    "list_shares",
    "revoke_share",
    "update_share",
]


def _share_permissions(share: Share) -> list[str]:
    out = ["view"] if share.can_view else []
    if share.can_receive_alerts:
        out.append("receive_alerts")
    if share.can_remote_bolus:
        out.append("remote_bolus")
    return out


def _new_invitation(
    session: Session,
    runtime: Runtime,
    *,
    kind: Literal["follower", "clinic"],
    person_id: str | None,
    clinic_id: str | None,
    created_by: str,
    permissions: dict[str, bool],
) -> InvitationOut:
    raw = new_opaque_token()
    now = runtime.clock.now()
    invitation = Invitation(
        id=str(uuid.uuid4()),
        kind=kind,
        person_id=person_id,
        clinic_id=clinic_id,
        created_by=created_by,
        token_hash=sha256_hex(raw),
        permissions=permissions,
        created_at=now,
        expires_at=now + timedelta(seconds=runtime.settings.invitation_ttl_s),
        accepted_at=None,
        accepted_by=None,
        revoked_at=None,
    )
    SharingRepository(session).add(invitation)
    return InvitationOut(
        invitation_id=invitation.id,
        kind=kind,
        token=raw,
        expires_at=invitation.expires_at,
    )


def invite_follower(
    session: Session, runtime: Runtime, ctx: PatientContext, permissions: FollowerPermissions
) -> InvitationOut:
    out = _new_invitation(
        session,
        runtime,
        kind="follower",
        person_id=ctx.person_id,
        clinic_id=None,
        created_by=ctx.caller.account_id,
        permissions=permissions.model_dump(),
    )
    record(
        session,
        runtime.clock,
        action="sharing.invited",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details={"permissions": permissions.model_dump()},
    )
    return out


def accept_invitation(session: Session, runtime: Runtime, caller: Caller, raw: str) -> AcceptedOut:
    repo = SharingRepository(session)
    invitation = repo.invitation_by_hash(sha256_hex(raw))
    now = runtime.clock.now()
    if (
        invitation is None
        or invitation.accepted_at is not None
        or invitation.revoked_at is not None
        or now >= invitation.expires_at
    ):
        raise NotFound("invitation not found, already used or expired")
    invitation.accepted_at = now
    invitation.accepted_by = caller.account_id
    if invitation.kind == "follower":
        assert invitation.person_id is not None
        if caller.account_id == invitation.person_id:
            raise InvalidRequest("you cannot follow yourself")
        perms = invitation.permissions
        share = repo.share(invitation.person_id, caller.account_id)
        if share is None:
            share = Share(
                id=str(uuid.uuid4()),
                person_id=invitation.person_id,
                follower_id=caller.account_id,
                created_at=now,
                revoked_at=None,
            )
            repo.add(share)
        share.revoked_at = None
        share.can_view = True
        share.can_receive_alerts = bool(perms.get("receive_alerts"))
        share.can_remote_bolus = bool(perms.get("remote_bolus"))
        record(
            session,
            runtime.clock,
            action="sharing.accepted",
            actor_id=caller.account_id,
            person_id=invitation.person_id,
            details={"permissions": _share_permissions(share)},
        )
        return AcceptedOut(kind="follower", person_id=invitation.person_id)
    # A clinic invitation is accepted by the person who will be the clinic's patient.
    assert invitation.clinic_id is not None
    if caller.role is not Role.PERSON:
        raise Forbidden("only a person with diabetes can join a clinic as its patient")
    link = repo.clinic_patient(invitation.clinic_id, caller.account_id)
    if link is None:
        repo.add(
            ClinicPatient(
                clinic_id=invitation.clinic_id,
                person_id=caller.account_id,
                created_at=now,
                revoked_at=None,
            )
        )
    else:
        link.revoked_at = None
    record(
        session,
        runtime.clock,
        action="clinic.patient_joined",
        actor_id=caller.account_id,
        person_id=caller.account_id,
        details={"clinic_id": invitation.clinic_id},
    )
    return AcceptedOut(kind="clinic", person_id=caller.account_id, clinic_id=invitation.clinic_id)


def list_shares(session: Session, ctx: PatientContext) -> list[ShareOut]:
    shares = SharingRepository(session).active_shares(ctx.person_id)
    names = AccountRepository(session).many([s.follower_id for s in shares])
    return [
        ShareOut(
            share_id=s.id,
            follower_id=s.follower_id,
            follower_name=names[s.follower_id].display_name if s.follower_id in names else "",
            permissions=_share_permissions(s),
            created_at=s.created_at,
        )
        for s in shares
    ]


def update_share(
    session: Session,
    runtime: Runtime,
    ctx: PatientContext,
    share_id: str,
    permissions: FollowerPermissions,
) -> ShareOut:
    repo = SharingRepository(session)
    share = repo.share_by_id(ctx.person_id, share_id)
    if share is None or share.revoked_at is not None:
        raise NotFound("no such share")
    share.can_receive_alerts = permissions.receive_alerts
    share.can_remote_bolus = permissions.remote_bolus
    record(
        session,
        runtime.clock,
        action="sharing.permissions_changed",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details={"share_id": share.id, "permissions": _share_permissions(share)},
    )
    return next(s for s in list_shares(session, ctx) if s.share_id == share.id)


def revoke_share(session: Session, runtime: Runtime, ctx: PatientContext, share_id: str) -> None:
    share = SharingRepository(session).share_by_id(ctx.person_id, share_id)
    if share is None or share.revoked_at is not None:
        raise NotFound("no such share")
    share.revoked_at = runtime.clock.now()
    record(
        session,
        runtime.clock,
        action="sharing.revoked",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details={"share_id": share.id},
    )


def create_clinic(session: Session, runtime: Runtime, caller: Caller, name: str) -> Clinic:
    if caller.role is not Role.CLINICIAN:
        raise Forbidden("only clinicians create clinics")
    clinic = Clinic(id=str(uuid.uuid4()), name=name, created_at=runtime.clock.now())
    repo = SharingRepository(session)
    repo.add(clinic)
    repo.add(
        ClinicMembership(clinic_id=clinic.id, clinician_id=caller.account_id, is_clinic_admin=True)
    )
    record(
        session,
        runtime.clock,
        action="clinic.created",
        actor_id=caller.account_id,
        details={"clinic_id": clinic.id},
    )
    return clinic


def _require_clinic_admin(session: Session, caller: Caller, clinic_id: str) -> None:
    membership = SharingRepository(session).membership(clinic_id, caller.account_id)
    if membership is None or not membership.is_clinic_admin:
        raise NotFound("no such clinic, or you do not administer it")


def add_clinician(
    session: Session, runtime: Runtime, caller: Caller, clinic_id: str, email: str
) -> None:
    _require_clinic_admin(session, caller, clinic_id)
    account = AccountRepository(session).by_email(email)
    if account is None or account.role != Role.CLINICIAN:
        raise NotFound("no clinician account with that e-mail")
    repo = SharingRepository(session)
    if repo.membership(clinic_id, account.id) is not None:
        raise Conflict("already a member")
    repo.add(ClinicMembership(clinic_id=clinic_id, clinician_id=account.id, is_clinic_admin=False))
    record(
        session,
        runtime.clock,
        action="clinic.member_added",
        actor_id=caller.account_id,
        details={"clinic_id": clinic_id, "clinician_id": account.id},
    )


def invite_patient_to_clinic(
    session: Session, runtime: Runtime, caller: Caller, clinic_id: str
) -> InvitationOut:
    _require_clinic_admin(session, caller, clinic_id)
    return _new_invitation(
        session,
        runtime,
        kind="clinic",
        person_id=None,
        clinic_id=clinic_id,
        created_by=caller.account_id,
        permissions={},
    )


def leave_clinic(session: Session, runtime: Runtime, ctx: PatientContext, clinic_id: str) -> None:
    link = SharingRepository(session).clinic_patient(clinic_id, ctx.person_id)
    if link is None or link.revoked_at is not None:
        raise NotFound("not linked to that clinic")
    link.revoked_at = runtime.clock.now()
    record(
        session,
        runtime.clock,
        action="clinic.patient_left",
        actor_id=ctx.caller.account_id,
        person_id=ctx.person_id,
        details={"clinic_id": clinic_id},
    )
