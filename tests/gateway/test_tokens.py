"""Access tokens that must not work: expired, alg=none, wrong key, wrong audience, revoked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.security.keys import KeyRing
from gateway.security.tokens import APP_AUDIENCE, PARTNER_AUDIENCE
from tests.gateway.conftest import PASSWORD, make_user


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _hs256_with_public_key(claims: dict[str, Any], kid: str, public_pem: bytes) -> str:
    """HS256 keyed with the published public key: the classic algorithm-confusion forgery."""
    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{_b64(claims)}"
    mac = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def _claims(user, settings, clock, **over):
    now = int(clock.now().timestamp())
    claims = {
        "iss": settings.issuer,
        "aud": APP_AUDIENCE,
        "sub": user.id,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
        "sid": jwt.decode(user.access, options={"verify_signature": False})["sid"],
        "role": "person",
    }
    claims.update(over)
    return claims


def test_forged_and_stale_tokens_are_refused(client, settings, clock, signing_key):
    user = make_user(client)
    assert client.get("/api/v1/me", headers=user.auth).status_code == 200
    kid = KeyRing.from_private_key(signing_key).current.kid
    other_key = Ed25519PrivateKey.generate()
    public_pem = signing_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    good = _claims(user, settings, clock)
    forged = {
        "expired": jwt.encode(
            _claims(user, settings, clock, exp=good["iat"] - 60),
            signing_key,
            algorithm="EdDSA",
            headers={"kid": kid},
        ),
        "alg_none": f"{_b64({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{_b64(good)}.",
        "alg_none_unsigned_no_dot": f"{_b64({'alg': 'none', 'kid': kid})}.{_b64(good)}",
        "wrong_key_same_kid": jwt.encode(good, other_key, algorithm="EdDSA", headers={"kid": kid}),
        "wrong_key_unknown_kid": jwt.encode(
            good, other_key, algorithm="EdDSA", headers={"kid": "attacker"}
        ),
        "wrong_audience": jwt.encode(
            _claims(user, settings, clock, aud="someone-else"),
            signing_key,
            algorithm="EdDSA",
            headers={"kid": kid},
        ),
        "partner_audience_on_app_api": jwt.encode(
            _claims(user, settings, clock, aud=PARTNER_AUDIENCE),
            signing_key,
            algorithm="EdDSA",
            headers={"kid": kid},
        ),
        "wrong_issuer": jwt.encode(
            _claims(user, settings, clock, iss="https://evil.example"),
            signing_key,
            algorithm="EdDSA",
            headers={"kid": kid},
        ),
        # HS256 with the public key as the HMAC secret (the classic key-confusion attack).
        "hs256_confusion": _hs256_with_public_key(good, kid, public_pem),
        "role_escalated": jwt.encode(
            _claims(user, settings, clock, role="admin"),
            signing_key,
            algorithm="EdDSA",
            headers={"kid": kid},
        ),
        "garbage": "not.a.token",
    }
    accepted = {
        name: token
        for name, token in forged.items()
        if client.get("/api/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code != 401
    }
    assert accepted == {}
    # The control: the same claims, correctly signed, are accepted.
    control = jwt.encode(good, signing_key, algorithm="EdDSA", headers={"kid": kid})
    assert (
        client.get("/api/v1/me", headers={"Authorization": f"Bearer {control}"}).status_code == 200
    )


def test_access_token_expires_by_the_injected_clock(client, clock, settings):
    user = make_user(client)
    clock.advance(settings.access_token_ttl_s - 10)
    assert client.get("/api/v1/me", headers=user.auth).status_code == 200
    clock.advance(20)
    assert client.get("/api/v1/me", headers=user.auth).status_code == 401


def test_logout_revokes_access_and_refresh(client):
    user = make_user(client)
    assert client.post("/api/v1/auth/logout", json={}, headers=user.auth).status_code == 204
    assert client.get("/api/v1/me", headers=user.auth).status_code == 401
    r = client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh})
    assert r.status_code == 401


def test_refresh_rotation_and_reuse_revokes_family(client):
    user = make_user(client)
    first = client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh})
    assert first.status_code == 200
    rotated = first.json()
    assert rotated["refresh_token"] != user.refresh
    headers = {"Authorization": f"Bearer {rotated['access_token']}"}
    assert client.get("/api/v1/me", headers=headers).status_code == 200
    # The old refresh token is replayed (stolen copy): the family dies, with its access tokens.
    replay = client.post("/api/v1/auth/refresh", json={"refresh_token": user.refresh})
    assert replay.status_code == 401
    assert client.get("/api/v1/me", headers=headers).status_code == 401
    again = client.post("/api/v1/auth/refresh", json={"refresh_token": rotated["refresh_token"]})
    assert again.status_code == 401
    # Other sessions of the same person are untouched.
    other = client.post("/api/v1/auth/token", json={"email": user.email, "password": PASSWORD})
    assert other.status_code == 200


def test_sign_in_failures_are_uniform_and_audited(client, engine):
    from sqlalchemy import select

    from gateway.models import AuditRow

    user = make_user(client)
    wrong = client.post("/api/v1/auth/token", json={"email": user.email, "password": "nope-nope"})
    unknown = client.post(
        "/api/v1/auth/token", json={"email": "nobody@example.org", "password": "nope-nope"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]
    with engine.connect() as conn:
        actions = conn.execute(select(AuditRow.action)).scalars().all()
    assert actions.count("auth.sign_in_failed") == 2


def test_jwks_publishes_the_verification_key(client, signing_key):
    user = make_user(client)
    jwks = client.get("/.well-known/jwks.json").json()
    header = jwt.get_unverified_header(user.access)
    (key,) = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    public = jwt.PyJWK(key).key
    claims = jwt.decode(
        user.access,
        public,
        algorithms=["EdDSA"],
        audience=APP_AUDIENCE,
        options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
    )
    assert claims["sub"] == user.id
    assert header["alg"] == "EdDSA"


def test_request_id_is_echoed_or_generated(client):
    user = make_user(client)
    r = client.get(
        f"/api/v1/people/{user.id}/glucose", headers={**user.auth, "X-Request-ID": "abc-123"}
    )
    assert r.headers["x-request-id"] == "abc-123"
    generated = client.get("/healthz").headers["x-request-id"]
    assert len(generated) == 32
    bad = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"})
    assert bad.headers["x-request-id"] != "bad id with spaces"
