"""Wire shapes of sign-up, sign-in and tokens. Input models forbid unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

__all__ = [
    "AccountOut",
    "Email",
    "LogoutIn",
    "PersonVisible",
    "RefreshIn",
    "SignInIn",
    "SignUpIn",
    "TokenPair",
]


# Deliberately simple: a mail is sent to prove ownership anyway, not parsed here.
Email = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True, to_lower=True, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
    ),
]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class SignUpIn(_In):
    email: Email
    password: str = Field(min_length=10, max_length=256)
    display_name: str = Field(min_length=1, max_length=100)
    # Admins are never self-made; they are created by operators.
    role: Literal["person", "caregiver", "clinician"]


class SignInIn(_In):
    email: Email
    password: str = Field(min_length=1, max_length=256)


class RefreshIn(_In):
    refresh_token: str = Field(min_length=10, max_length=200)


class LogoutIn(_In):
    refresh_token: str | None = Field(default=None, max_length=200)


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a type name
    expires_in: int


class AccountOut(BaseModel):
    id: str
    email: str
    display_name: str
    role: str
    created_at: datetime


class PersonVisible(BaseModel):
    person_id: str
    display_name: str
    relation: Literal["self", "follower", "clinic"]
    permissions: list[str]
