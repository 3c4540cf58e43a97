"""The glucose read path's caches never serve a stale answer, across workers.

Two gateway apps on one SQLite file stand for two uvicorn workers: each has its own in-memory
caches (verified tokens, access results, serialised glucose pages). Whatever one of them
commits — a new reading, a revoked share, a logout — the other's very next answer reflects it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from gateway.app import create_app
from gateway.db import make_engine
from gateway.settings import GatewaySettings
from services.runtime.clock import FixedClock
from tests.gateway.conftest import User, follow, make_user


@pytest.fixture
def two_workers(
    settings: GatewaySettings, clock: FixedClock, engine: Engine
) -> Iterator[tuple[TestClient, TestClient]]:
    assert settings.database_url is not None
    other_engine = make_engine(settings.database_url)
    try:
        with (
            TestClient(create_app(settings, clock, engine=engine)) as a,
            TestClient(create_app(settings, clock, engine=other_engine)) as b,
        ):
            yield a, b
    finally:
        other_engine.dispose()


def _uploader(client: TestClient, person: User) -> dict[str, str]:
    secret = "uploader-secret-123"
    path = f"/api/v1/people/{person.id}/nightscout/secret"
    ok = client.put(path, json={"secret": secret}, headers=person.auth)
    assert ok.status_code in (200, 204), ok.text
    return {"api-secret": hashlib.sha1(secret.encode()).hexdigest()}  # Nightscout's scheme


def _upload(client: TestClient, headers: dict[str, str], clock: FixedClock, *values: int) -> None:
    """One sgv entry per value, 5 min apart, the last at `clock.now()`."""
    now = clock.now()
    entries = [
        {
            "type": "sgv",
            "sgv": v,
            "date": int((now - timedelta(minutes=5 * (len(values) - 1 - i))).timestamp() * 1000),
            "direction": "Flat",
            "device": "xDrip-test",
        }
        for i, v in enumerate(values)
    ]
    up = client.post("/api/v1/entries", json=entries, headers=headers)
    assert up.status_code == 200, up.text


def _values(client: TestClient, person: User, who: User) -> list[int]:
    got = client.get(f"/api/v1/people/{person.id}/glucose", headers=who.auth)
    assert got.status_code == 200, got.text
    return [r["glucose_mg_dl"] for r in got.json()["readings"]]


def test_new_reading_committed_by_one_worker_is_served_by_the_other(
    two_workers: tuple[TestClient, TestClient], clock: FixedClock
) -> None:
    a, b = two_workers
    ada = make_user(a)
    carer = make_user(a, "caregiver", "Carer")
    follow(a, ada, carer, view=True)
    headers = _uploader(a, ada)
    _upload(b, headers, clock, 110, 115, 120)
    assert _values(a, ada, carer) == [120, 115, 110]
    assert _values(a, ada, carer) == [120, 115, 110]  # answered from the cache: same
    clock.advance(300)
    _upload(b, headers, clock, 131)  # committed through the other worker
    assert _values(a, ada, carer) == [131, 120, 115, 110]
    assert _values(b, ada, carer) == [131, 120, 115, 110]
    # Paging over the cached page: limit and next_end as without a cache.
    page = a.get(f"/api/v1/people/{ada.id}/glucose", params={"limit": 2}, headers=carer.auth).json()
    assert [r["glucose_mg_dl"] for r in page["readings"]] == [131, 120]
    older = a.get(
        f"/api/v1/people/{ada.id}/glucose",
        params={"limit": 2, "end": page["next_end"]},
        headers=carer.auth,
    ).json()
    assert [r["glucose_mg_dl"] for r in older["readings"]] == [115, 110]
    assert older["next_end"] is not None


def test_revoked_share_and_logout_take_effect_on_the_next_request_everywhere(
    two_workers: tuple[TestClient, TestClient], clock: FixedClock
) -> None:
    a, b = two_workers
    ada = make_user(a)
    carer = make_user(a, "caregiver", "Carer")
    follow(a, ada, carer, view=True)
    _upload(b, _uploader(a, ada), clock, 140)
    assert _values(a, ada, carer) == [140]  # the access result is now remembered on a

    shares = b.get(f"/api/v1/people/{ada.id}/shares", headers=ada.auth).json()
    gone = b.delete(f"/api/v1/people/{ada.id}/shares/{shares[0]['share_id']}", headers=ada.auth)
    assert gone.status_code == 204, gone.text
    revoked = a.get(f"/api/v1/people/{ada.id}/glucose", headers=carer.auth)
    assert revoked.status_code == 404, revoked.text

    assert _values(a, ada, ada) == [140]
    out = b.post("/api/v1/auth/logout", json={"refresh_token": ada.refresh}, headers=ada.auth)
    assert out.status_code == 204, out.text
    after = a.get(f"/api/v1/people/{ada.id}/glucose", headers=ada.auth)
    assert after.status_code == 401, after.text


def test_token_expiry_is_checked_on_every_request_even_when_remembered(
    two_workers: tuple[TestClient, TestClient], clock: FixedClock, settings: GatewaySettings
) -> None:
    a, _ = two_workers
    ada = make_user(a)
    assert _values(a, ada, ada) == []
    clock.advance(settings.access_token_ttl_s + 10)
    expired = a.get(f"/api/v1/people/{ada.id}/glucose", headers=ada.auth)
    assert expired.status_code == 401, expired.text


def test_the_read_path_engine_reads_without_the_write_lock_and_cannot_write(
    settings: GatewaySettings, engine: Engine
) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import OperationalError

    from services.runtime.db import create_service_engine

    assert settings.database_url is not None
    reader = create_service_engine("gateway", settings.database_url, read_only=True)
    try:
        # A writer holds the write lock (BEGIN IMMEDIATE) and has not committed yet...
        with engine.begin() as writing:
            writing.execute(text("CREATE TABLE scratch (x INTEGER)"))
            # ...and the reader still reads at once (busy_timeout would make it wait 10 s).
            with reader.connect() as reading:
                assert reading.execute(text("SELECT 1")).scalar() == 1
        with reader.connect() as reading, pytest.raises(OperationalError, match="readonly"):
            reading.execute(text("INSERT INTO scratch VALUES (1)"))
    finally:
        reader.dispose()
