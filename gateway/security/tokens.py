"""Short-lived JWT access tokens: EdDSA only, `kid`, issuer and audience always checked.

Time checks use the injected clock (not PyJWT's wall clock), so simulated time works and
expiry is testable. Revocation is by session: every access token names its refresh-token
family (`sid`), and the caller of `decode` checks that the family is still live.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt

from gateway.errors import Unauthenticated
from gateway.security.keys import KeyRing
from services.runtime.clock import Clock

__all__ = ["ALLOWED_ALGORITHMS", "APP_AUDIENCE", "PARTNER_AUDIENCE", "AccessClaims", "TokenIssuer"]

ALLOWED_ALGORITHMS = ("EdDSA",)  # a whitelist of one: no `none`, no HMAC-with-public-key
APP_AUDIENCE = "langerhans-app"
PARTNER_AUDIENCE = "langerhans-partner"
_LEEWAY_S = 5
# Verified signatures are remembered per (token, audience) until the token expires: an Ed25519
# verify plus JSON parsing costs ~100 µs per request, the lookup ~1 µs. Only what the signature
# proves is cached; times are checked on every call and revocation by the caller.
_VERIFIED_CACHE_MAX = 50_000


@dataclass(frozen=True)
class AccessClaims:
    subject: str
    role: str
    session_id: str
    audience: str
    scopes: tuple[str, ...]
    client_id: str | None
    expires_at: datetime


class TokenIssuer:
    def __init__(self, keys: KeyRing, issuer: str, ttl_s: int, clock: Clock) -> None:
        self._keys = keys
        self._issuer = issuer
        self._ttl_s = ttl_s
        self._clock = clock
        self._verified: dict[tuple[str, str], dict[str, Any]] = {}

    @property
    def ttl_s(self) -> int:
        return self._ttl_s

    def issue(
        self,
        *,
        subject: str,
        role: str,
        session_id: str,
        audience: str,
        scopes: tuple[str, ...] = (),
        client_id: str | None = None,
    ) -> str:
        now = self._clock.now()
        claims: dict[str, Any] = {
            "iss": self._issuer,
            "aud": audience,
            "sub": subject,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int((now + timedelta(seconds=self._ttl_s)).timestamp()),
            "jti": str(uuid.uuid4()),
            "sid": session_id,
            "role": role,
        }
        if scopes:
            claims["scope"] = " ".join(scopes)
        if client_id is not None:
            claims["client_id"] = client_id
        return jwt.encode(
            claims,
            self._keys.current.private_key,
            algorithm="EdDSA",
            headers={"kid": self._keys.current.kid, "typ": "at+jwt"},
        )

    def decode(self, token: str, audience: str) -> AccessClaims:
        """Verify signature, algorithm, kid, issuer, audience and times; raise Unauthenticated."""
        key = (token, audience)
        claims = self._verified.get(key)
        if claims is None:
            claims = self._verify(token, audience)
            if len(self._verified) >= _VERIFIED_CACHE_MAX:
                self._forget_expired()
            self._verified[key] = claims
        now_s = self._clock.now().timestamp()
        if not isinstance(claims["exp"], int) or now_s >= claims["exp"] + _LEEWAY_S:
            raise Unauthenticated("access token expired")
        if not isinstance(claims["nbf"], int) or now_s < claims["nbf"] - _LEEWAY_S:
            raise Unauthenticated("access token not yet valid")
        scope = claims.get("scope", "")
        return AccessClaims(
            subject=str(claims["sub"]),
            role=str(claims["role"]),
            session_id=str(claims["sid"]),
            audience=audience,
            scopes=tuple(str(scope).split()) if scope else (),
            client_id=claims.get("client_id"),
            expires_at=datetime.fromtimestamp(claims["exp"], tz=self._clock.now().tzinfo),
        )

    def _forget_expired(self) -> None:
        now_s = self._clock.now().timestamp()
        for key, claims in list(self._verified.items()):
            exp = claims.get("exp")
            if not isinstance(exp, int) or now_s >= exp + _LEEWAY_S:
                self._verified.pop(key, None)
        if len(self._verified) >= _VERIFIED_CACHE_MAX:
            self._verified.clear()  # a flood of live tokens: start over rather than grow

    def _verify(self, token: str, audience: str) -> dict[str, Any]:
        """Signature, algorithm, kid, issuer and audience (not times); raise Unauthenticated."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed access token") from exc
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise Unauthenticated("access token algorithm not accepted")
        key = self._keys.verification_keys.get(str(header.get("kid")))
        if key is None:
            raise Unauthenticated("access token signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=audience,
                issuer=self._issuer,
                options={
                    "require": ["exp", "iat", "nbf", "sub", "sid", "aud", "iss", "role"],
                    "verify_exp": False,  # checked in decode against the injected clock
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.PyJWTError as exc:
            raise Unauthenticated("access token rejected") from exc
        if not isinstance(claims, dict):
            raise Unauthenticated("access token rejected")
        return claims
