"""Gateway test fixtures: a real app on a temporary SQLite database, injected clock."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from gateway.app import create_app
from gateway.db import make_engine, migrate
from gateway.settings import GatewaySettings
from services.runtime.clock import FixedClock

PASSWORD = "correct horse battery"


def pem_of(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="session")
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("gwtemplate") / "gateway.sqlite3"
    migrate(f"sqlite:///{path}")
    return path


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(datetime(2026, 1, 15, 12, 0, tzinfo=UTC))


@pytest.fixture
def settings(signing_key: Ed25519PrivateKey, tmp_path: Path) -> GatewaySettings:
    return GatewaySettings(
        environment="test",
        database_url=f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        jwt_private_key_pem=SecretStr(pem_of(signing_key)),
        secret_pepper=SecretStr("test-pepper-" + "x" * 40),
        argon2_time_cost=1,
        argon2_memory_kib=64,
        http_port=8000,
        log_json=False,
    )


@pytest.fixture
def engine(settings: GatewaySettings, template_db: Path) -> Iterator[Engine]:
    assert settings.database_url is not None
    shutil.copy(template_db, settings.database_url.removeprefix("sqlite:///"))
    engine = make_engine(settings.database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def app(settings: GatewaySettings, clock: FixedClock, engine: Engine) -> FastAPI:
    return create_app(settings, clock, engine=engine)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@dataclass
class User:
    id: str
    email: str
    role: str
    access: str
    refresh: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access}"}


def make_user(client: TestClient, role: str = "person", name: str = "Ada") -> User:
    email = f"{role}-{uuid.uuid4().hex[:10]}@example.org"
    created = client.post(
        "/api/v1/auth/signup",
        json={"email": email, "password": PASSWORD, "display_name": name, "role": role},
    )
    assert created.status_code == 201, created.text
    tokens = client.post("/api/v1/auth/token", json={"email": email, "password": PASSWORD})
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    return User(created.json()["id"], email, role, body["access_token"], body["refresh_token"])


def follow(client: TestClient, person: User, follower: User, **permissions: bool) -> None:
    inv = client.post(
        f"/api/v1/people/{person.id}/invitations",
        json={"permissions": permissions},
        headers=person.auth,
    )
    assert inv.status_code == 201, inv.text
    ok = client.post(
        "/api/v1/invitations/accept", json={"token": inv.json()["token"]}, headers=follower.auth
    )
    assert ok.status_code == 200, ok.text


VALID_SETTINGS: dict[str, Any] = {
    "age_group": "adult",
    "basal_schedule": [
        {"start_min": 0, "rate_u_per_h": 0.8},
        {"start_min": 360, "rate_u_per_h": 1.1},
    ],
    "carb_ratios": [{"start_min": 0, "carbs_g_per_u": 10}],
    "sensitivities": [{"start_min": 0, "isf_mg_dl_per_u": 45}],
    "targets": [{"start_min": 0, "low_mg_dl": 100, "high_mg_dl": 120}],
    "max_bolus_u": 10,
    "max_basal_u_per_h": 3,
    "max_iob_u": 8,
}


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[str]:
    """The app under a real uvicorn on 127.0.0.1 (an ephemeral port), for real HTTP clients."""
    import socket
    import threading
    import time

    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
