"""25 simultaneous remote-bolus attempts for one person against the gateway on SQLite.

Real HTTP (uvicorn on 127.0.0.1), the gateway's real SQLite database (the single-machine
default) and a fake dosing engine on a real gRPC socket that answers slowly, as a loaded
engine does. Every attempt gets a clear answer (issued, or 409 because another bolus holds
the decision window), never a 5xx, and the engine is asked to issue one bolus per window.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import cast

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from gateway.app import create_app
from gateway.models import AuditRow
from gateway.settings import GatewaySettings
from services.runtime.clock import FixedClock
from tests.gateway.conftest import PASSWORD, VALID_SETTINGS, follow, make_user
from tests.gateway.grpc_fakes import FakeDosingEngine, serve_fakes

ATTEMPTS = 25
ENGINE_DELAY_S = 0.3  # a loaded engine: every issue call takes this long


@pytest.fixture
def engine_fake(clock: FixedClock) -> FakeDosingEngine:
    fake = FakeDosingEngine(clock)
    fake.delay_s = ENGINE_DELAY_S
    return fake


@pytest.fixture
def base_url(
    settings: GatewaySettings, clock: FixedClock, engine: Engine, engine_fake: FakeDosingEngine
) -> Iterator[str]:
    with serve_fakes(engine_fake) as address:
        wired = settings.model_copy(update={"dosing_engine_addr": address})
        app = create_app(wired, clock, engine=engine)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(
            uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        )
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            thread.join(10)
            sock.close()


def _sign_in(http: httpx.Client, email: str) -> dict[str, str]:
    got = http.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert got.status_code == 200, got.text
    return {"Authorization": f"Bearer {got.json()['access_token']}"}


def _attempt(
    base_url: str, person_id: str, auth: dict[str, str], barrier: threading.Barrier
) -> str:
    """Ask for a bolus and confirm it at once, as an app does; how it ended."""
    with httpx.Client(base_url=base_url, timeout=60) as http:
        barrier.wait(30)
        asked = http.post(
            f"/api/v1/people/{person_id}/bolus-requests",
            json={"carbs_g": 20, "glucose_mg_dl": 160},
            headers=auth,
        )
        if asked.status_code != 201:
            return f"request_{asked.status_code}"
        confirmed = http.post(
            f"/api/v1/people/{person_id}/bolus-requests/{asked.json()['request_id']}/confirm",
            headers=auth,
        )
        if confirmed.status_code == 409:
            assert "decision window" in confirmed.json()["error"]["message"], confirmed.text
        return "issued" if confirmed.status_code == 200 else f"confirm_{confirmed.status_code}"


def test_25_simultaneous_attempts_one_bolus_no_5xx(
    base_url: str,
    engine_fake: FakeDosingEngine,
    engine: Engine,
    clock: FixedClock,
) -> None:
    # The person and two caregivers allowed to bolus remotely, each with their own token.
    with httpx.Client(base_url=base_url, timeout=60) as http:
        client = cast(TestClient, http)  # the conftest helpers use only the httpx interface
        person = make_user(client, "person")
        carers = [make_user(client, "caregiver", f"Carer {n}") for n in range(2)]
        for carer in carers:
            follow(client, person, carer, view=True, remote_bolus=True)
        actors = [_sign_in(http, who.email) for who in (person, *carers)]
    outcomes: Counter[str] = Counter()
    for window in range(2):
        barrier = threading.Barrier(ATTEMPTS)
        results: list[str] = []

        def fire(
            n: int, barrier: threading.Barrier = barrier, results: list[str] = results
        ) -> None:
            results.append(_attempt(base_url, person.id, actors[n % len(actors)], barrier))

        threads = [threading.Thread(target=fire, args=(n,)) for n in range(ATTEMPTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        print(f"window {window}: {Counter(results)}")
        assert len(results) == ATTEMPTS
        assert results.count("issued") == 1, Counter(results)
        assert set(results) == {"issued", "confirm_409"}, Counter(results)
        outcomes.update(results)
        clock.advance(301)  # the next decision window
    # The engine was asked to issue exactly one bolus per window (no second request id).
    assert len(engine_fake.issue_calls) == 2
    assert len(engine_fake.issued) == 2
    with Session(engine) as session:
        actions = list(session.scalars(select(AuditRow.action)))
    assert actions.count("bolus.issued") == 2
    assert actions.count("bolus.refused") == 2 * (ATTEMPTS - 1)


@pytest.mark.slow
def test_storage_busy_past_the_timeout_is_503_not_500(
    settings: GatewaySettings, clock: FixedClock, engine: Engine
) -> None:
    """Another writer holding SQLite's write lock past the busy timeout (10 s): a write gets a
    clear 503 with Retry-After, not an internal error (a read does not wait for the lock)."""
    import sqlite3

    with TestClient(create_app(settings, clock, engine=engine)) as client:
        ada = make_user(client)
        assert settings.database_url is not None
        holder = sqlite3.connect(settings.database_url.removeprefix("sqlite:///"))
        holder.isolation_level = None
        change = {"settings": VALID_SETTINGS, "expected_version": 0}
        url = f"/api/v1/people/{ada.id}/therapy-settings"
        holder.execute("BEGIN IMMEDIATE")
        try:
            got = client.put(url, json=change, headers=ada.auth)
            read = client.get("/api/v1/me", headers=ada.auth)
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert got.status_code == 503, got.text
        assert got.json()["error"]["code"] == "storage_busy"
        assert got.headers["retry-after"]
        assert read.status_code == 200, read.text
        assert client.put(url, json=change, headers=ada.auth).status_code == 200


def test_engine_refusal_gives_the_window_back_and_no_answer_keeps_it(
    settings: GatewaySettings, clock: FixedClock, engine: Engine, engine_fake: FakeDosingEngine
) -> None:
    """The window is claimed before the engine is asked: a refusal releases it, an engine that
    does not answer leaves it taken (the outcome is unknown) until a retry gets the answer."""
    engine_fake.delay_s = 0.0
    with serve_fakes(engine_fake) as address:
        wired = settings.model_copy(update={"dosing_engine_addr": address, "grpc_deadline_s": 1.0})
        with TestClient(create_app(wired, clock, engine=engine)) as client:
            ada = make_user(client)
            base = f"/api/v1/people/{ada.id}/bolus-requests"

            def ask(carbs_g: float) -> str:
                got = client.post(base, json={"carbs_g": carbs_g, "glucose_mg_dl": 110},
                                  headers=ada.auth)  # fmt: skip
                assert got.status_code == 201, got.text
                return str(got.json()["request_id"])

            too_big = ask(120)  # 12 U: the engine refuses (above its max bolus of 10 U)
            refused = client.post(f"{base}/{too_big}/confirm", headers=ada.auth)
            assert refused.status_code == 409, refused.text
            assert client.get(f"{base}/{too_big}", headers=ada.auth).json()["status"] == "refused"
            # The window was given back: a bolus the engine accepts goes through.
            engine_fake.delay_s = 2.0  # but now the engine answers after the gateway's deadline
            slow = ask(30)
            unknown = client.post(f"{base}/{slow}/confirm", headers=ada.auth)
            assert unknown.status_code == 503, unknown.text
            assert client.get(f"{base}/{slow}", headers=ada.auth).json()["status"] == "uncertain"
            # Outcome unknown: the window stays taken for anyone else ...
            other = ask(20)
            blocked = client.post(f"{base}/{other}/confirm", headers=ada.auth)
            assert blocked.status_code == 409, blocked.text
            # ... and confirming the same request again gets the engine's one answer.
            engine_fake.delay_s = 0.0
            retried = client.post(f"{base}/{slow}/confirm", headers=ada.auth)
            assert retried.status_code == 200, retried.text
            assert retried.json()["status"] == "issued"
    assert engine_fake.issue_calls[slow] == 2
    assert len(engine_fake.issued) == 1
    assert other not in engine_fake.issue_calls
