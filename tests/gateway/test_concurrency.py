"""Concurrent writers over real HTTP keep one unbroken audit chain and never see a 5xx."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor

import httpx
from sqlalchemy.orm import Session

from gateway.audit.service import verify_chain
from tests.gateway.conftest import PASSWORD, VALID_SETTINGS


def _worker(base_url: str, n: int) -> list[int]:
    statuses = []
    with httpx.Client(base_url=base_url, timeout=30) as http:
        email = f"concurrent-{n}@example.org"
        statuses.append(
            http.post(
                "/api/v1/auth/signup",
                json={"email": email, "password": PASSWORD, "display_name": "C", "role": "person"},
            ).status_code
        )
        token = http.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
        statuses.append(token.status_code)
        auth = {"Authorization": f"Bearer {token.json()['access_token']}"}
        me = http.get("/api/v1/me", headers=auth).json()["id"]
        for version in range(5):
            settings = copy.deepcopy(VALID_SETTINGS)
            settings["max_bolus_u"] = 5 + version
            statuses.append(
                http.put(
                    f"/api/v1/people/{me}/therapy-settings",
                    json={"settings": settings, "expected_version": version},
                    headers=auth,
                ).status_code
            )
    return statuses


def test_concurrent_audited_writes(live_server, engine):
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda n: _worker(live_server, n), range(8)))
    statuses = [s for r in results for s in r]
    assert statuses.count(500) == 0
    assert set(statuses) == {200, 201}
    with Session(engine) as session:
        result = verify_chain(session)
    assert result.ok, result
    # 8 sign-ups + 8 sign-ins + 40 settings changes.
    assert result.rows_checked == 56
