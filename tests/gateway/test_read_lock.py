"""On SQLite, requests that only read never take or wait for the write lock; writes still do.

A GET runs in a DEFERRED, write-refusing transaction (WAL snapshot), so a follower's app keeps
answering while another request holds the write lock; a PUT begins IMMEDIATE and queues behind
the open write instead of failing or deadlocking on a lock upgrade.
"""

from __future__ import annotations

import copy
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from tests.gateway.conftest import VALID_SETTINGS, make_user

# Far below SQLite's busy timeout (10 s): a read that waited for the lock could not pass.
READ_BUDGET_S = 2.0


def _settings(max_bolus_u: float) -> dict[str, object]:
    settings = copy.deepcopy(VALID_SETTINGS)
    settings["max_bolus_u"] = max_bolus_u
    return settings


def test_reads_answer_while_a_write_transaction_holds_the_lock(client, live_server, engine):
    person = make_user(client, name="Ada")
    put = client.put(
        f"/api/v1/people/{person.id}/therapy-settings",
        json={"settings": _settings(6), "expected_version": 0},
        headers=person.auth,
    )
    assert put.status_code == 200, put.text
    reads = [
        "/api/v1/me",
        "/api/v1/people",
        f"/api/v1/people/{person.id}/glucose",
        f"/api/v1/people/{person.id}/therapy-settings",
        f"/api/v1/people/{person.id}/therapy-settings/history",
        f"/api/v1/people/{person.id}/treatments",
        f"/api/v1/people/{person.id}/devices",
        f"/api/v1/people/{person.id}/shares",
    ]
    with engine.connect() as writer, httpx.Client(base_url=live_server, timeout=30) as http:
        writer.begin()  # BEGIN IMMEDIATE: this connection holds the write lock from here on
        writer.execute(
            text("UPDATE accounts SET display_name = 'Not yet' WHERE id = :id"), {"id": person.id}
        )
        for path in reads:
            started = time.monotonic()
            got = http.get(path, headers=person.auth)
            elapsed_s = time.monotonic() - started
            assert got.status_code == 200, (path, got.text)
            assert elapsed_s < READ_BUDGET_S, (path, elapsed_s)
        # The uncommitted write is not visible to readers.
        assert http.get("/api/v1/me", headers=person.auth).json()["display_name"] == "Ada"

        # A write queues behind the open transaction, then succeeds once it ends.
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(
                http.put,
                f"/api/v1/people/{person.id}/therapy-settings",
                json={"settings": _settings(7), "expected_version": 1},
                headers=person.auth,
            )
            time.sleep(0.5)
            assert not pending.done(), "a write must wait for the write lock"
            writer.commit()
            queued = pending.result(timeout=15)
        assert queued.status_code == 200, queued.text
    after = client.get(f"/api/v1/people/{person.id}/therapy-settings", headers=person.auth)
    assert after.json()["version"] == 2
    assert after.json()["settings"]["max_bolus_u"] == 7
    assert client.get("/api/v1/me", headers=person.auth).json()["display_name"] == "Not yet"


def test_read_sessions_refuse_writes(app):
    # A route answering a GET that tried to write would fail loudly, not race the writers.
    with app.state.runtime.read_session_factory() as session, pytest.raises(OperationalError):
        session.execute(text("UPDATE accounts SET display_name = 'x'"))


def test_readers_and_writers_together_never_fail(client, live_server):
    person = make_user(client, name="Ada")
    writes_each = 6

    def writer(n: int) -> list[int]:
        statuses = []
        with httpx.Client(base_url=live_server, timeout=30) as http:
            for i in range(writes_each):
                got = http.post(
                    f"/api/v1/people/{person.id}/treatments",
                    json={
                        "kind": "carbs",
                        "carbs_g": 10 + i,
                        "client_ref": f"writer-{n}-{i}",
                        "occurred_at": "2026-01-15T11:00:00Z",
                    },
                    headers=person.auth,
                )
                statuses.append(got.status_code)
        return statuses

    def reader(_n: int) -> list[int]:
        with httpx.Client(base_url=live_server, timeout=30) as http:
            return [
                http.get(path, headers=person.auth).status_code
                for _ in range(writes_each)
                for path in (
                    f"/api/v1/people/{person.id}/treatments",
                    f"/api/v1/people/{person.id}/glucose",
                    "/api/v1/me",
                )
            ]

    with ThreadPoolExecutor(max_workers=8) as pool:
        writers = [pool.submit(writer, n) for n in range(4)]
        readers = [pool.submit(reader, n) for n in range(4)]
        written = [f.result() for f in writers]
        read = [f.result() for f in readers]
    assert {s for r in written for s in r} == {201}
    assert {s for r in read for s in r} == {200}
    listed = client.get(
        f"/api/v1/people/{person.id}/treatments", params={"limit": 100}, headers=person.auth
    )
    assert len(listed.json()) == 4 * writes_each
