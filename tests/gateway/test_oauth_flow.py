"""OAuth2 authorization code + PKCE, walked with a real HTTP client against real uvicorn."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from html import unescape
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.gateway.conftest import PASSWORD

REDIRECT = "https://app.example.org/callback"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=")
    return verifier, challenge.decode()


@pytest.fixture
def http(live_server):
    with httpx.Client(base_url=live_server, follow_redirects=False, timeout=10) as client:
        yield client


@pytest.fixture
def world(http):
    """A person with glucose data, a developer with a registered app."""

    def signup(role):
        email = f"{role}-{secrets.token_hex(4)}@example.org"
        r = http.post(
            "/api/v1/auth/signup",
            json={"email": email, "password": PASSWORD, "display_name": role, "role": role},
        )
        assert r.status_code == 201, r.text
        token = http.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
        return {
            "id": r.json()["id"],
            "email": email,
            "auth": {"Authorization": f"Bearer {token.json()['access_token']}"},
        }

    person = signup("person")
    developer = signup("caregiver")
    app = http.post(
        "/api/v1/developer/apps",
        json={"name": "Glucose Graphs", "redirect_uris": [REDIRECT]},
        headers=developer["auth"],
    )
    assert app.status_code == 201, app.text
    # The person uploads readings through the Nightscout API (the glucose source for now).
    http.put(
        f"/api/v1/people/{person['id']}/nightscout/secret",
        json={"secret": "person-secret-123"},
        headers=person["auth"],
    )
    sha1 = hashlib.sha1(b"person-secret-123").hexdigest()
    up = http.post(
        "/api/v1/entries",
        json=[
            {
                "type": "sgv",
                "sgv": 120 + i,
                "date": 1768478400000 - i * 300_000,
                "direction": "Flat",
                "delta": 1.0,
                "device": "xDrip-DexcomG6",
            }
            for i in range(5)
        ],
        headers={"api-secret": sha1},
    )
    assert up.status_code == 200, up.text
    return {"person": person, "client_id": app.json()["client_id"]}


def authorize_params(client_id, challenge, scope="glucose.read events.read", **over):
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": REDIRECT,
        "scope": scope,
        "state": "xyz-state",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    params.update(over)
    return {k: v for k, v in params.items() if v is not None}


def consent(http, params, person, decision="allow"):
    page = http.get("/oauth/authorize", params=params)
    assert page.status_code == 200, page.text
    assert "<form" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    hidden = dict(re.findall(r'<input type=hidden name="([^"]+)" value="([^"]*)"', page.text))
    form = {k: unescape(v) for k, v in hidden.items()}
    form.update(email=person["email"], password=PASSWORD, decision=decision)
    return http.post("/oauth/authorize", data=form)


def get_code(http, world, verifier_challenge, scope="glucose.read events.read"):
    _, challenge = verifier_challenge
    r = consent(http, authorize_params(world["client_id"], challenge, scope), world["person"])
    assert r.status_code == 303, r.text
    location = urlsplit(r.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = parse_qs(location.query)
    assert query["state"] == ["xyz-state"]
    return query["code"][0]


def exchange(http, client_id, code, verifier, redirect_uri=REDIRECT):
    return http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": client_id,
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
        },
    )


def bearer(token_response) -> dict[str, str]:
    return {"Authorization": f"Bearer {token_response.json()['access_token']}"}


def refresh(http, client_id, token):
    return http.post(
        "/oauth/token",
        data={"grant_type": "refresh_token", "client_id": client_id, "refresh_token": token},
    )


def test_whole_flow_consent_code_token_refresh_rotation(http, world):
    client_id = world["client_id"]
    pair = pkce()
    code = get_code(http, world, pair)
    tokens = exchange(http, client_id, code, pair[0])
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["token_type"] == "Bearer"
    assert set(body["scope"].split()) == {"glucose.read", "events.read"}
    assert tokens.headers["cache-control"] == "no-store"
    auth = {"Authorization": f"Bearer {body['access_token']}"}

    egvs = http.get(
        "/partner/v1/egvs",
        params={"startDate": "2026-01-15T00:00:00Z", "endDate": "2026-01-15T13:00:00Z"},
        headers=auth,
    )
    assert egvs.status_code == 200, egvs.text
    data = egvs.json()
    assert (data["recordType"], data["userId"]) == ("egv", world["person"]["id"])
    first = data["records"][0]
    assert {"systemTime", "displayTime", "value", "unit", "trend", "trendRate"} <= set(first)
    assert (first["value"], first["unit"], first["trend"], first["trendRate"]) == (
        120,
        "mg/dL",
        "flat",
        0.2,
    )
    assert [r["value"] for r in data["records"]] == [120, 121, 122, 123, 124]
    assert http.get("/partner/v1/events", headers=auth).status_code == 200
    # Not granted: devices.read.
    assert http.get("/partner/v1/devices", headers=auth).status_code == 403
    # A partner token is not an app token.
    assert http.get("/api/v1/me", headers=auth).status_code == 401

    rotated = refresh(http, client_id, body["refresh_token"])
    assert rotated.status_code == 200, rotated.text
    new = rotated.json()
    assert new["refresh_token"] != body["refresh_token"]
    new_auth = {"Authorization": f"Bearer {new['access_token']}"}
    assert http.get("/partner/v1/egvs", headers=new_auth).status_code == 200
    newer = refresh(http, client_id, new["refresh_token"])
    assert newer.status_code == 200

    # Replaying a rotated refresh token revokes the whole family.
    replay = refresh(http, client_id, body["refresh_token"])
    assert replay.status_code == 400
    assert replay.json()["error"] == "invalid_grant"
    newest_auth = {"Authorization": f"Bearer {newer.json()['access_token']}"}
    assert http.get("/partner/v1/egvs", headers=newest_auth).status_code == 401
    assert refresh(http, client_id, newer.json()["refresh_token"]).status_code == 400


def test_refused_requests_accept_nothing(http, world):
    client_id = world["client_id"]
    verifier, challenge = pkce()
    person = world["person"]
    accepted = {}

    # Authorization requests that must not even show a consent form.
    bad_authorize = {
        "missing_pkce": authorize_params(client_id, None, code_challenge_method=None),
        "plain_pkce": authorize_params(client_id, verifier, code_challenge_method="plain"),
        "missing_method": authorize_params(client_id, challenge, code_challenge_method=None),
        "redirect_mismatch": authorize_params(
            client_id, challenge, redirect_uri="https://app.example.org/callback/evil"
        ),
        "redirect_prefix": authorize_params(
            client_id, challenge, redirect_uri="https://app.example.org/callback?x=1"
        ),
        "dosing_scope": authorize_params(client_id, challenge, scope="glucose.read bolus.write"),
        "insulin_scope": authorize_params(client_id, challenge, scope="insulin.deliver"),
        "unknown_client": authorize_params("lh_nope", challenge),
        "token_response_type": authorize_params(client_id, challenge, response_type="token"),
    }
    for name, params in bad_authorize.items():
        page = http.get("/oauth/authorize", params=params)
        if page.status_code != 400 or "<form" in page.text:
            accepted[f"authorize:{name}"] = page.status_code
        # Posting the consent form directly with the same bad parameters issues no code either.
        form = {**params, "email": person["email"], "password": PASSWORD, "decision": "allow"}
        post = http.post("/oauth/authorize", data=form)
        if post.status_code == 303 or "code=" in post.headers.get("location", ""):
            accepted[f"authorize-post:{name}"] = post.status_code

    # Code exchange attacks.
    code = get_code(http, world, (verifier, challenge))
    wrong_verifier = exchange(http, client_id, code, pkce()[0])
    if wrong_verifier.status_code == 200:
        accepted["wrong_verifier"] = 200
    # That failed attempt spent the code: the right verifier no longer helps.
    if exchange(http, client_id, code, verifier).status_code == 200:
        accepted["code_after_failed_attempt"] = 200

    code = get_code(http, world, (verifier, challenge))
    if exchange(http, client_id, code, verifier, redirect_uri=REDIRECT + "/x").status_code == 200:
        accepted["token_redirect_mismatch"] = 200

    code = get_code(http, world, (verifier, challenge))
    no_verifier = http.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "client_id": client_id,
            "code": code,
            "redirect_uri": REDIRECT,
        },
    )
    if no_verifier.status_code == 200:
        accepted["missing_verifier"] = 200

    code = get_code(http, world, (verifier, challenge))
    first = exchange(http, client_id, code, verifier)
    assert first.status_code == 200
    reuse = exchange(http, client_id, code, verifier)
    if reuse.status_code == 200:
        accepted["code_reuse"] = 200
    # Reuse also revokes what the code had issued.
    auth = {"Authorization": f"Bearer {first.json()['access_token']}"}
    if http.get("/partner/v1/egvs", headers=auth).status_code == 200:
        accepted["tokens_of_reused_code"] = 200

    # A denied consent redirects with an error and no code.
    denied = consent(http, authorize_params(client_id, challenge), person, decision="deny")
    if "code=" in denied.headers.get("location", ""):
        accepted["denied_consent"] = denied.status_code

    assert accepted == {}


def test_rate_limit_returns_429_with_retry_after(http, world, app):
    app.state.runtime.settings.partner_rate_limit_per_min = 5
    verifier, challenge = pkce()
    code = get_code(http, world, (verifier, challenge))
    auth = bearer(exchange(http, world["client_id"], code, verifier))
    statuses = [http.get("/partner/v1/egvs", headers=auth).status_code for _ in range(7)]
    assert statuses[:5] == [200] * 5
    limited = http.get("/partner/v1/egvs", headers=auth)
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1


def test_webhook_subscriptions(http, world):
    verifier, challenge = pkce()
    code = get_code(http, world, (verifier, challenge), scope="glucose.read")
    auth = bearer(exchange(http, world["client_id"], code, verifier))
    created = http.post(
        "/partner/v1/webhooks",
        json={"url": "https://app.example.org/hook", "events": ["egv.created"]},
        headers=auth,
    )
    assert created.status_code == 201, created.text
    assert len(created.json()["secret"]) >= 32
    # An event outside the granted scopes, or a plain-http URL, is refused.
    assert (
        http.post(
            "/partner/v1/webhooks",
            json={"url": "https://a.example/h", "events": ["event.created"]},
            headers=auth,
        ).status_code
        == 403
    )
    assert (
        http.post(
            "/partner/v1/webhooks",
            json={"url": "http://a.example/h", "events": ["egv.created"]},
            headers=auth,
        ).status_code
        == 422
    )
    listed = http.get("/partner/v1/webhooks", headers=auth).json()
    assert [w["webhook_id"] for w in listed] == [created.json()["webhook_id"]]
    assert listed[0]["secret"] is None  # the secret is shown only once
    assert (
        http.delete(f"/partner/v1/webhooks/{listed[0]['webhook_id']}", headers=auth).status_code
        == 204
    )
    assert http.get("/partner/v1/webhooks", headers=auth).json() == []
