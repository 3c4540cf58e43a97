"""Roles, per-person permissions, and the one function that decides who may do what to whom.

A caller's permissions over a person come only from their relation to that person:
themselves (a person account), an active share (a follower's per-follower permissions) or an
active clinic link (clinicians of a clinic the person joined). Admins manage accounts, not
health data: no relation, no access.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.models import ClinicMembership, ClinicPatient, Share

__all__ = ["Caller", "PatientContext", "Permission", "Role", "permissions_for"]


class Role(enum.StrEnum):
    PERSON = "person"  # a person with diabetes
    CAREGIVER = "caregiver"
    CLINICIAN = "clinician"
    ADMIN = "admin"


class Permission(enum.StrEnum):
    VIEW = "view"
    RECEIVE_ALERTS = "receive_alerts"
    REMOTE_BOLUS = "remote_bolus"  # also: record treatments for the person
    EDIT_SETTINGS = "edit_settings"
    MANAGE = "manage"  # sharing, devices, secrets: the person themself only


@dataclass(frozen=True)
class Caller:
    account_id: str
    role: Role
    session_id: str


@dataclass(frozen=True)
class PatientContext:
    """The result of an access check: who is asking about whom, with which permissions."""

    person_id: str
    caller: Caller
    permissions: frozenset[Permission]


def permissions_for(session: Session, caller: Caller, person_id: str) -> frozenset[Permission]:
    if caller.account_id == person_id and caller.role is Role.PERSON:
        return frozenset(Permission)
    granted: set[Permission] = set()
    share = session.scalars(
        select(Share).where(
            Share.person_id == person_id,
            Share.follower_id == caller.account_id,
            Share.revoked_at.is_(None),
        )
    ).first()
    if share is not None and share.can_view:
        granted.add(Permission.VIEW)
        if share.can_receive_alerts:
            granted.add(Permission.RECEIVE_ALERTS)
        if share.can_remote_bolus:
            granted.add(Permission.REMOTE_BOLUS)
    if caller.role is Role.CLINICIAN:
        linked = session.scalars(
            select(ClinicPatient.clinic_id)
            .join(ClinicMembership, ClinicMembership.clinic_id == ClinicPatient.clinic_id)
            .where(
                ClinicPatient.person_id == person_id,
                ClinicPatient.revoked_at.is_(None),
                ClinicMembership.clinician_id == caller.account_id,
            )
        ).first()
        if linked is not None:
            granted |= {Permission.VIEW, Permission.EDIT_SETTINGS}
    return frozenset(granted)
