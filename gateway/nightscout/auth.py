"""Nightscout authentication, kept apart from the app API's bearer tokens.

- `api-secret: <SHA-1 hex of the person's secret>` — read and write (uploaders);
- `api-secret: token=<token>`, or `?token=<token>` — a read-only access token (followers).

The person is identified by the credential itself. Digests at rest are HMAC(pepper, value),
so a database copy does not reveal a usable header value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Query
from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.deps import RuntimeDep, SessionDep
from gateway.errors import Forbidden, Unauthenticated
from gateway.models import NsSecret, NsToken
from gateway.security.secrets import keyed_digest

__all__ = ["NsCaller", "NsReader", "NsWriter", "resolve_ns_caller"]

_SHA1_HEX = re.compile(r"^[0-9a-fA-F]{40}$")


@dataclass(frozen=True)
class NsCaller:
    person_id: str
    can_write: bool
    via: str  # "api-secret" or "token"


def _by_token(session: Session, pepper: str, token: str) -> NsCaller | None:
    row = session.scalars(
        select(NsToken).where(
            NsToken.token_digest == keyed_digest(pepper, token), NsToken.revoked_at.is_(None)
        )
    ).first()
    return NsCaller(row.person_id, can_write=False, via="token") if row else None


def resolve_ns_caller(
    session: Session, pepper: str, api_secret: str | None, token: str | None
) -> NsCaller | None:
    if api_secret:
        if api_secret.startswith("token="):
            return _by_token(session, pepper, api_secret.removeprefix("token="))
        if _SHA1_HEX.match(api_secret):
            row = session.scalars(
                select(NsSecret).where(
                    NsSecret.secret_digest == keyed_digest(pepper, api_secret.lower())
                )
            ).first()
            return NsCaller(row.person_id, can_write=True, via="api-secret") if row else None
        return None
    if token:
        return _by_token(session, pepper, token)
    return None


def _reader(
    runtime: RuntimeDep,
    session: SessionDep,
    api_secret: Annotated[str | None, Header(alias="api-secret")] = None,
    token: Annotated[str | None, Query(max_length=200)] = None,
) -> NsCaller:
    caller = resolve_ns_caller(session, runtime.pepper, api_secret, token)
    if caller is None:
        raise Unauthenticated("Nightscout API: valid api-secret or token required")
    return caller


def _writer(caller: Annotated[NsCaller, Depends(_reader)]) -> NsCaller:
    if not caller.can_write:
        raise Forbidden("read-only token: uploads need the api-secret")
    return caller


NsReader = Annotated[NsCaller, Depends(_reader)]
NsWriter = Annotated[NsCaller, Depends(_writer)]
