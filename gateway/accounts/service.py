"""Accounts and sessions: sign-up, sign-in, refresh-token rotation with reuse detection.

A session is a refresh-token family. Refreshing rotates: the presented token is marked
rotated and a new one of the same family is issued. Presenting a rotated token again means it
was copied — the whole family (and every access token naming it) is revoked at once.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from gateway.access import Caller, Permission, Role, permissions_for
from gateway.accounts.repository import AccountRepository, RefreshTokenRepository
from gateway.accounts.schemas import PersonVisible, SignInIn, SignUpIn
from gateway.audit.service import record
from gateway.errors import Conflict, Unauthenticated
from gateway.models import Account, ClinicMembership, ClinicPatient, RefreshToken, Share
from gateway.runtime import Runtime
from gateway.security.secrets import new_opaque_token, sha256_hex
from gateway.security.tokens import APP_AUDIENCE

__all__ = [
    "IssuedTokens",
    "issue_session",
    "people_visible",
    "revoke_session",
    "rotate",
    "sign_in",
    "sign_up",
]


@dataclass(frozen=True)
class IssuedTokens:
    access_token: str
    refresh_token: str
    expires_in: int
    family_id: str
    scopes: tuple[str, ...] = ()


def sign_up(session: Session, runtime: Runtime, data: SignUpIn) -> Account:
    repo = AccountRepository(session)
    if repo.by_email(data.email) is not None:
        raise Conflict("an account with that e-mail already exists")
    account = Account(
        id=str(uuid.uuid4()),
        email=data.email,
        password_hash=runtime.passwords.hash(data.password),
        display_name=data.display_name,
        role=Role(data.role).value,
        created_at=runtime.clock.now(),
        disabled=False,
    )
    repo.add(account)
    record(
        session,
        runtime.clock,
        action="account.created",
        actor_id=account.id,
        person_id=account.id if account.role == Role.PERSON else None,
        details={"role": account.role},
    )
    return account


def _new_refresh(
    session: Session,
    runtime: Runtime,
    *,
    account_id: str,
    family_id: str,
    client_id: str | None,
    scopes: tuple[str, ...],
) -> str:
    raw = new_opaque_token()
    now = runtime.clock.now()
    RefreshTokenRepository(session).add(
        RefreshToken(
            id=str(uuid.uuid4()),
            family_id=family_id,
            account_id=account_id,
            token_hash=sha256_hex(raw),
            client_id=client_id,
            scopes=list(scopes),
            issued_at=now,
            expires_at=now + timedelta(seconds=runtime.settings.refresh_token_ttl_s),
            rotated_at=None,
            revoked_at=None,
        )
    )
    return raw


def issue_session(
    session: Session,
    runtime: Runtime,
    account: Account,
    *,
    audience: str = APP_AUDIENCE,
    client_id: str | None = None,
    scopes: tuple[str, ...] = (),
    family_id: str | None = None,
) -> IssuedTokens:
    family = family_id or str(uuid.uuid4())
    refresh = _new_refresh(
        session,
        runtime,
        account_id=account.id,
        family_id=family,
        client_id=client_id,
        scopes=scopes,
    )
    access = runtime.tokens.issue(
        subject=account.id,
        role=account.role,
        session_id=family,
        audience=audience,
        scopes=scopes,
        client_id=client_id,
    )
    return IssuedTokens(access, refresh, runtime.tokens.ttl_s, family, scopes)


def sign_in(session: Session, runtime: Runtime, data: SignInIn) -> IssuedTokens:
    account = AccountRepository(session).by_email(data.email)
    ok = runtime.passwords.verify(account.password_hash if account else None, data.password)
    if account is None or not ok or account.disabled:
        record(
            session,
            runtime.clock,
            action="auth.sign_in_failed",
            actor_id=account.id if account else None,
            details={"email_digest": sha256_hex(data.email)},
        )
        raise Unauthenticated("wrong e-mail or password", keep_changes=True)
    record(session, runtime.clock, action="auth.signed_in", actor_id=account.id)
    return issue_session(session, runtime, account)


def rotate(
    session: Session, runtime: Runtime, raw_refresh: str, *, client_id: str | None
) -> tuple[Account, RefreshToken]:
    """Consume a refresh token; return its account and row. Reuse revokes the family."""
    repo = RefreshTokenRepository(session)
    row = repo.by_hash(sha256_hex(raw_refresh))
    now = runtime.clock.now()
    if row is None or row.client_id != client_id:
        raise Unauthenticated("unknown refresh token")
    if row.revoked_at is not None:
        raise Unauthenticated("refresh token revoked")
    if row.rotated_at is not None:
        repo.revoke_family(row.family_id, now)
        record(
            session,
            runtime.clock,
            action="auth.refresh_reuse_detected",
            actor_id=row.account_id,
            details={"family_id": row.family_id, "client_id": client_id},
        )
        raise Unauthenticated(
            "refresh token already used: the session is revoked", keep_changes=True
        )
    if now >= row.expires_at:
        raise Unauthenticated("refresh token expired")
    account = AccountRepository(session).get(row.account_id)
    if account is None or account.disabled:
        raise Unauthenticated("account not active")
    row.rotated_at = now
    return account, row


def refresh_session(session: Session, runtime: Runtime, raw_refresh: str) -> IssuedTokens:
    account, row = rotate(session, runtime, raw_refresh, client_id=None)
    return issue_session(session, runtime, account, family_id=row.family_id)


def revoke_session(session: Session, runtime: Runtime, caller: Caller) -> None:
    RefreshTokenRepository(session).revoke_family(caller.session_id, runtime.clock.now())
    record(
        session,
        runtime.clock,
        action="auth.session_revoked",
        actor_id=caller.account_id,
        details={"family_id": caller.session_id},
    )


def people_visible(session: Session, caller: Caller) -> list[PersonVisible]:
    """Everyone the caller has any relation to, with the permissions it grants."""
    candidates: dict[str, str] = {}
    if caller.role is Role.PERSON:
        candidates[caller.account_id] = "self"
    for person_id in session.scalars(
        select(Share.person_id).where(
            Share.follower_id == caller.account_id, Share.revoked_at.is_(None)
        )
    ):
        candidates.setdefault(person_id, "follower")
    if caller.role is Role.CLINICIAN:
        for person_id in session.scalars(
            select(ClinicPatient.person_id)
            .join(ClinicMembership, ClinicMembership.clinic_id == ClinicPatient.clinic_id)
            .where(
                ClinicMembership.clinician_id == caller.account_id,
                ClinicPatient.revoked_at.is_(None),
            )
        ):
            candidates.setdefault(person_id, "clinic")
    accounts = AccountRepository(session).many(list(candidates))
    out: list[PersonVisible] = []
    for person_id, relation in candidates.items():
        granted = permissions_for(session, caller, person_id)
        account = accounts.get(person_id)
        if account is None or Permission.VIEW not in granted:
            continue
        out.append(
            PersonVisible(
                person_id=person_id,
                display_name=account.display_name,
                relation=relation,  # type: ignore[arg-type]
                permissions=sorted(p.value for p in granted),
            )
        )
    return out
