"""Partner-token dependencies: audience, live session, consent, scope, per-app rate limit."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends

from gateway.deps import RuntimeDep, SessionDep, bearer_token, verify_live_token
from gateway.errors import Forbidden, Unauthenticated
from gateway.partner.repository import PartnerRepository
from gateway.security.tokens import PARTNER_AUDIENCE

__all__ = ["PartnerCaller", "partner_scope"]


@dataclass(frozen=True)
class PartnerCaller:
    person_id: str
    client_id: str
    scopes: tuple[str, ...]


def partner_scope(scope: str | None) -> Callable[..., PartnerCaller]:
    """Dependency: a partner token for this app, still consented, holding `scope`."""

    def check(
        runtime: RuntimeDep, session: SessionDep, token: Annotated[str, Depends(bearer_token)]
    ) -> PartnerCaller:
        claims = verify_live_token(runtime, session, token, PARTNER_AUDIENCE)
        if claims.client_id is None:
            raise Unauthenticated("not a partner token")
        repo = PartnerRepository(session)
        client = repo.client(claims.client_id)
        grant = repo.grant(claims.client_id, claims.subject)
        if client is None or client.disabled or grant is None or grant.revoked_at is not None:
            raise Unauthenticated("app access withdrawn")
        runtime.rate_limiter.take(
            claims.client_id,
            client.rate_limit_per_min or runtime.settings.partner_rate_limit_per_min,
        )
        if scope is not None and (scope not in claims.scopes or scope not in grant.scopes):
            raise Forbidden(f"this needs the '{scope}' scope")
        return PartnerCaller(claims.subject, claims.client_id, claims.scopes)

    return check
