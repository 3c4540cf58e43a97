"""OAuth2 authorization code + PKCE (RFC 6749, RFC 7636 S256 only, RFC 9700 advice).

- public clients, PKCE mandatory with S256; `plain` and missing challenges are refused;
- redirect URIs match a registered one exactly (no prefix, no wildcard); a request with an
  unknown client or a mismatching URI never redirects anywhere;
- only the read scopes in `PARTNER_SCOPES`; any other scope (a dosing one above all) is refused;
- codes are single-use and short-lived; presenting a used code again revokes what it issued;
- refresh tokens rotate; a replayed one revokes the whole grant family.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlencode, urlsplit

from sqlalchemy.orm import Session

from gateway.access import Role
from gateway.accounts.repository import AccountRepository, RefreshTokenRepository
from gateway.accounts.service import IssuedTokens, issue_session, rotate
from gateway.audit.service import record
from gateway.errors import InvalidRequest, OAuthError, Unauthenticated
from gateway.models import OAuthClient, OAuthCode, OAuthGrant
from gateway.partner.repository import PartnerRepository
from gateway.partner.scopes import PARTNER_SCOPES
from gateway.runtime import Runtime
from gateway.security.secrets import new_opaque_token, sha256_hex
from gateway.security.tokens import PARTNER_AUDIENCE

__all__ = [
    "AuthorizeRequest",
    "approve",
    "check_redirect_uri_registrable",
    "exchange_code",
    "refresh",
    "register_app",
    "revoke",
    "validate_authorize",
]

_CHALLENGE = re.compile(r"^[A-Za-z0-9_-]{43}$")  # base64url of a SHA-256 digest
_VERIFIER = re.compile(r"^[A-Za-z0-9._~-]{43,128}$")


@dataclass(frozen=True)
class AuthorizeRequest:
    client: OAuthClient
    redirect_uri: str
    scopes: tuple[str, ...]
    state: str
    code_challenge: str


class AuthorizeRefused(InvalidRequest):
    """A malformed authorization request: shown on the page, never redirected."""


def check_redirect_uri_registrable(uri: str) -> None:
    parts = urlsplit(uri)
    loopback = parts.hostname in {"127.0.0.1", "localhost", "::1"}
    if parts.scheme not in {"https", "http"} or (parts.scheme == "http" and not loopback):
        raise InvalidRequest(f"redirect URI must be https (or http on loopback): {uri}")
    if parts.fragment or not parts.netloc:
        raise InvalidRequest(f"redirect URI must be absolute and without a fragment: {uri}")


def register_app(
    session: Session, runtime: Runtime, owner_id: str, name: str, redirect_uris: list[str]
) -> OAuthClient:
    for uri in redirect_uris:
        check_redirect_uri_registrable(uri)
    client = OAuthClient(
        client_id=f"lh_{new_opaque_token(18)}",
        name=name,
        owner_id=owner_id,
        redirect_uris=list(dict.fromkeys(redirect_uris)),
        rate_limit_per_min=None,
        created_at=runtime.clock.now(),
        disabled=False,
    )
    PartnerRepository(session).add(client)
    record(
        session,
        runtime.clock,
        action="oauth.app_registered",
        actor_id=owner_id,
        details={"client_id": client.client_id, "redirect_uris": client.redirect_uris},
    )
    return client


def validate_authorize(
    session: Session,
    *,
    response_type: str | None,
    client_id: str | None,
    redirect_uri: str | None,
    scope: str | None,
    state: str | None,
    code_challenge: str | None,
    code_challenge_method: str | None,
) -> AuthorizeRequest:
    client = PartnerRepository(session).client(client_id or "")
    if client is None or client.disabled:
        raise AuthorizeRefused("unknown client_id")
    if redirect_uri is None or redirect_uri not in client.redirect_uris:
        raise AuthorizeRefused("redirect_uri does not exactly match a registered one")
    if response_type != "code":
        raise AuthorizeRefused("response_type must be 'code'")
    if code_challenge_method != "S256":
        raise AuthorizeRefused("PKCE with code_challenge_method=S256 is required")
    if code_challenge is None or not _CHALLENGE.match(code_challenge):
        raise AuthorizeRefused("code_challenge must be a base64url SHA-256 (43 characters)")
    scopes = tuple(dict.fromkeys((scope or "").split()))
    if not scopes:
        raise AuthorizeRefused("at least one scope is required")
    unknown = [s for s in scopes if s not in PARTNER_SCOPES]
    if unknown:
        raise AuthorizeRefused(
            f"scope not available to partner apps: {', '.join(unknown)} "
            "(read-only scopes only; nothing that doses)"
        )
    if state is not None and len(state) > 500:
        raise AuthorizeRefused("state too long")
    return AuthorizeRequest(client, redirect_uri, scopes, state or "", code_challenge)


def _redirect(uri: str, params: dict[str, str]) -> str:
    separator = "&" if urlsplit(uri).query else "?"
    return f"{uri}{separator}{urlencode(params)}"


def approve(
    session: Session,
    runtime: Runtime,
    req: AuthorizeRequest,
    *,
    email: str,
    password: str,
    decision: str,
) -> str:
    """Sign the person in, record consent, return the redirect URL (with code or error)."""
    account = AccountRepository(session).by_email(email.strip().lower())
    ok = runtime.passwords.verify(account.password_hash if account else None, password)
    if account is None or not ok or account.disabled:
        record(
            session,
            runtime.clock,
            action="oauth.consent_sign_in_failed",
            actor_id=account.id if account else None,
            details={"client_id": req.client.client_id},
        )
        raise Unauthenticated("wrong e-mail or password", keep_changes=True)
    state = {"state": req.state} if req.state else {}
    if decision != "allow":
        record(
            session,
            runtime.clock,
            action="oauth.consent_denied",
            actor_id=account.id,
            person_id=account.id,
            details={"client_id": req.client.client_id},
        )
        return _redirect(req.redirect_uri, {"error": "access_denied", **state})
    if account.role != Role.PERSON:
        return _redirect(
            req.redirect_uri,
            {
                "error": "access_denied",
                "error_description": "only a person with diabetes can share their own data",
                **state,
            },
        )
    now = runtime.clock.now()
    repo = PartnerRepository(session)
    grant = repo.grant(req.client.client_id, account.id)
    if grant is None:
        repo.add(
            OAuthGrant(
                client_id=req.client.client_id,
                account_id=account.id,
                scopes=list(req.scopes),
                granted_at=now,
                revoked_at=None,
            )
        )
    else:
        grant.scopes = (
            sorted(set(grant.scopes) | set(req.scopes))
            if grant.revoked_at is None
            else list(req.scopes)
        )
        grant.granted_at = now
        grant.revoked_at = None
    raw_code = new_opaque_token()
    repo.add(
        OAuthCode(
            code_hash=sha256_hex(raw_code),
            client_id=req.client.client_id,
            account_id=account.id,
            redirect_uri=req.redirect_uri,
            scopes=list(req.scopes),
            code_challenge=req.code_challenge,
            family_id=str(uuid.uuid4()),
            created_at=now,
            expires_at=now + timedelta(seconds=runtime.settings.oauth_code_ttl_s),
            used_at=None,
        )
    )
    record(
        session,
        runtime.clock,
        action="oauth.consent_granted",
        actor_id=account.id,
        person_id=account.id,
        details={"client_id": req.client.client_id, "scopes": list(req.scopes)},
    )
    return _redirect(req.redirect_uri, {"code": raw_code, **state})


def _pkce_ok(verifier: str, challenge: str) -> bool:
    if not _VERIFIER.match(verifier):
        return False
    digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return hmac.compare_digest(digest.decode(), challenge)


def exchange_code(
    session: Session,
    runtime: Runtime,
    *,
    code: str | None,
    redirect_uri: str | None,
    client_id: str | None,
    code_verifier: str | None,
) -> IssuedTokens:
    if not code or not client_id or not redirect_uri:
        raise OAuthError("invalid_request", "code, client_id and redirect_uri are required")
    if not code_verifier:
        raise OAuthError("invalid_request", "code_verifier is required (PKCE)")
    repo = PartnerRepository(session)
    row = repo.code(sha256_hex(code))
    now = runtime.clock.now()
    if row is None or row.client_id != client_id:
        raise OAuthError("invalid_grant", "unknown authorization code")
    if row.used_at is not None:
        # A replayed code: revoke whatever it issued (RFC 6749 §4.1.2).
        RefreshTokenRepository(session).revoke_family(row.family_id, now)
        record(
            session,
            runtime.clock,
            action="oauth.code_reuse_detected",
            actor_id=client_id,
            person_id=row.account_id,
            details={"family_id": row.family_id},
        )
        raise OAuthError("invalid_grant", "authorization code already used", keep_changes=True)
    row.used_at = now  # spent even if the checks below fail: a code gets one attempt
    if now >= row.expires_at:
        raise OAuthError("invalid_grant", "authorization code expired", keep_changes=True)
    if row.redirect_uri != redirect_uri:
        raise OAuthError(
            "invalid_grant",
            "redirect_uri differs from the authorization request",
            keep_changes=True,
        )
    if not _pkce_ok(code_verifier, row.code_challenge):
        raise OAuthError("invalid_grant", "PKCE verification failed", keep_changes=True)
    grant = repo.grant(client_id, row.account_id)
    account = AccountRepository(session).get(row.account_id)
    if grant is None or grant.revoked_at is not None or account is None or account.disabled:
        raise OAuthError("invalid_grant", "consent withdrawn", keep_changes=True)
    tokens = issue_session(
        session,
        runtime,
        account,
        audience=PARTNER_AUDIENCE,
        client_id=client_id,
        scopes=tuple(row.scopes),
        family_id=row.family_id,
    )
    record(
        session,
        runtime.clock,
        action="oauth.tokens_issued",
        actor_id=client_id,
        person_id=account.id,
        details={"family_id": row.family_id, "scopes": row.scopes},
    )
    return tokens


def refresh(
    session: Session, runtime: Runtime, *, refresh_token: str | None, client_id: str | None
) -> IssuedTokens:
    if not refresh_token or not client_id:
        raise OAuthError("invalid_request", "refresh_token and client_id are required")
    try:
        account, row = rotate(session, runtime, refresh_token, client_id=client_id)
    except Unauthenticated as exc:
        raise OAuthError("invalid_grant", exc.message, keep_changes=exc.keep_changes) from exc
    grant = PartnerRepository(session).grant(client_id, account.id)
    if grant is None or grant.revoked_at is not None:
        raise OAuthError("invalid_grant", "consent withdrawn")
    scopes = tuple(s for s in row.scopes if s in grant.scopes)
    return issue_session(
        session,
        runtime,
        account,
        audience=PARTNER_AUDIENCE,
        client_id=client_id,
        scopes=scopes,
        family_id=row.family_id,
    )


def revoke(session: Session, runtime: Runtime, *, token: str | None, client_id: str | None) -> None:
    """RFC 7009: revoke the refresh token's family; unknown tokens are not an error."""
    if not token or not client_id:
        return
    row = RefreshTokenRepository(session).by_hash(sha256_hex(token))
    if row is not None and row.client_id == client_id:
        RefreshTokenRepository(session).revoke_family(row.family_id, runtime.clock.now())
        record(
            session,
            runtime.clock,
            action="oauth.token_revoked",
            actor_id=client_id,
            person_id=row.account_id,
            details={"family_id": row.family_id},
        )
