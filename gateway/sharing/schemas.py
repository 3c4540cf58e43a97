"""Wire shapes for sharing, invitations and clinics."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from gateway.accounts.schemas import Email

__all__ = [
    "AcceptIn",
    "AcceptedOut",
    "ClinicIn",
    "ClinicMemberIn",
    "ClinicOut",
    "FollowerPermissions",
    "InvitationIn",
    "InvitationOut",
    "ShareOut",
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class FollowerPermissions(_In):
    view: Literal[True] = True  # a follower always sees; without it there is no share
    receive_alerts: bool = False
    remote_bolus: bool = False


class InvitationIn(_In):
    permissions: FollowerPermissions = Field(default_factory=FollowerPermissions)


class InvitationOut(BaseModel):
    invitation_id: str
    kind: Literal["follower", "clinic"]
    token: str = Field(description="shown once; give it to the invitee")
    expires_at: datetime


class AcceptIn(_In):
    token: str = Field(min_length=10, max_length=200)


class AcceptedOut(BaseModel):
    kind: Literal["follower", "clinic"]
    person_id: str
    clinic_id: str | None = None


class ShareOut(BaseModel):
    share_id: str
    follower_id: str
    follower_name: str
    permissions: list[str]
    created_at: datetime


class ClinicIn(_In):
    name: str = Field(min_length=1, max_length=100)


class ClinicOut(BaseModel):
    clinic_id: str
    name: str


class ClinicMemberIn(_In):
    email: Email
