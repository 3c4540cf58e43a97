"""Concurrent boluses for one person: the person, a caregiver (remote bolus allowed), a
clinician and a partner app fire 100 attempts through the gateway over real HTTP (uvicorn),
backed by a real dosing-engine process on the real broker. Every signed command the engine
queues for the pump is read back from its commands topic: issued (so executed) ≤ 1 per
decision window.

The gateway and the engine share one clock running 20× so four 5-minute decision windows pass
in a minute.
"""

from __future__ import annotations

import copy
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import uvicorn
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from kafka import KafkaProducer
from langerhans.device.v1 import device_pb2
from pydantic import SecretStr

from gateway.app import create_app
from gateway.db import make_engine, migrate
from gateway.settings import GatewaySettings
from services.runtime.clock import AcceleratedClock
from services.runtime.command_signing import generate_signing_key, write_private_key
from services.runtime.kafka.envelope import encode_headers, new_envelope
from services.runtime.settings import REPO_ROOT
from tests.device_gateway.harness import clock_env, free_port
from tests.dosing_engine.conftest import reading, settings_changed
from tests.dosing_engine.test_kafka import _wait_settings
from tests.gateway.conftest import PASSWORD, VALID_SETTINGS, pem_of
from tests.gateway.test_oauth_flow import REDIRECT, authorize_params, consent, exchange, pkce
from tests.reliability.figures import record_figure
from tests.reliability.test_crash_storm import _read_all

pytestmark = [
    pytest.mark.kafka,
    pytest.mark.slow,
    pytest.mark.postgres,
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]
SPEED = 20.0
WINDOWS = 4
ATTEMPTS = 100
WINDOW_S = 300


class Platform:
    """A dosing-engine process and the gateway app under uvicorn, on one accelerated clock."""

    def __init__(
        self, tmp_path: Path, kafka: str, make_topic: Callable[..., str], gateway_db: str
    ) -> None:
        self.kafka = kafka
        env_clock = clock_env(SPEED)
        self.clock = AcceleratedClock(
            speed=SPEED,
            sim_start=datetime.fromisoformat(env_clock["LANGERHANS_CLOCK_SIM_START"]),
            real_start_epoch_s=float(env_clock["LANGERHANS_CLOCK_REAL_START_EPOCH_S"]),
        )
        names = ("readings", "pumpev", "therapy", "outcomes", "decisions", "commands")
        self.topics = {n: make_topic(1, f"bolus{n}") for n in names}
        signer = generate_signing_key()
        write_private_key(signer, tmp_path / "signing.pem")
        engine_port = free_port()
        self.engine_port = engine_port
        env = {
            **os.environ,
            **env_clock,
            "KAFKA_BOOTSTRAP_SERVERS": kafka,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'dosing.sqlite3'}",
            "LANGERHANS_GRPC_PORT": str(engine_port),
            "LANGERHANS_METRICS_PORT": "0",
            "LANGERHANS_LOG_JSON": "false",
            "LANGERHANS_COMMAND_SIGNING_KEY_PATH": str(tmp_path / "signing.pem"),
            "LANGERHANS_CONSUMER_GROUP": f"bolus-{uuid.uuid4().hex[:8]}",
            **{f"LANGERHANS_{n.upper()}_TOPIC": t for n, t in self.topics.items()
               if n not in {"pumpev", "therapy"}},
            "LANGERHANS_PUMP_EVENTS_TOPIC": self.topics["pumpev"],
            "LANGERHANS_SETTINGS_TOPIC": self.topics["therapy"],
        }  # fmt: skip
        self.log = tmp_path / "dosing-engine.log"
        with self.log.open("ab") as out:
            self.engine_process = subprocess.Popen(
                [sys.executable, "-m", "services.cli", "serve", "dosing-engine"],
                cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", engine_port), timeout=0.2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, self.log.read_text()[-2000:]
                time.sleep(0.2)
        url = gateway_db
        migrate(url)
        self.db = make_engine(url)
        settings = GatewaySettings(
            environment="test",
            database_url=url,
            jwt_private_key_pem=SecretStr(pem_of(Ed25519PrivateKey.generate())),
            secret_pepper=SecretStr("bolus-pepper-" + "x" * 40),
            argon2_time_cost=1,
            argon2_memory_kib=64,
            log_json=False,
            dosing_engine_addr=f"127.0.0.1:{engine_port}",
        )
        app = create_app(settings, self.clock, engine=self.db)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        config = uvicorn.Config(app, log_config=None, access_log=False, lifespan="on")
        self.server = uvicorn.Server(config)
        self.sock = sock
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)  # fmt: skip
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        self.producer = KafkaProducer(bootstrap_servers=kafka, acks="all")

    def publish(self, topic: str, key: str, message: Any) -> None:
        envelope = new_envelope(key, message, source="reliability/bolus", time=self.clock.now())
        self.producer.send(self.topics[topic], key=key.encode(), value=envelope.data,
                           headers=encode_headers(envelope))  # fmt: skip
        self.producer.flush()

    def close(self) -> None:
        self.producer.close()
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()
        self.db.dispose()
        os.killpg(self.engine_process.pid, signal.SIGTERM)
        try:
            self.engine_process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.engine_process.pid, signal.SIGKILL)


@pytest.fixture
def gateway_db(postgres_url: str) -> Iterator[str]:
    """A database of its own on the PostgreSQL server (the gateway's schema name is fixed).

    PostgreSQL, as in production. SQLite (the single-machine default) gives the same answers
    to these 25 simultaneous attempts, 409 for the losers and at most one bolus per window
    (tests/gateway/test_bolus_concurrency.py).
    """
    import psycopg

    name = f"reliability_{uuid.uuid4().hex[:10]}"
    admin_url = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = postgres_url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def platform(
    tmp_path: Path, kafka_bootstrap: str, make_topic: Callable[..., str], gateway_db: str
) -> Iterator[Platform]:
    platform = Platform(tmp_path, kafka_bootstrap, make_topic, gateway_db)
    yield platform
    platform.close()


def _account(http: httpx.Client, role: str) -> dict[str, Any]:
    email = f"{role}-{secrets.token_hex(4)}@example.org"
    created = http.post("/api/v1/auth/signup", json={
        "email": email, "password": PASSWORD, "display_name": role, "role": role})  # fmt: skip
    assert created.status_code == 201, created.text
    return {"id": created.json()["id"], "email": email}


def _sign_in(http: httpx.Client, account: dict[str, Any]) -> dict[str, str]:
    token = http.post("/api/v1/auth/token",
                      json={"email": account["email"], "password": PASSWORD})  # fmt: skip
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access_token']}"}


def _attempt(base_url: str, person_id: str, auth: dict[str, str]) -> str:
    """Ask for a bolus and confirm it at once; returns how it ended."""
    with httpx.Client(base_url=base_url, timeout=30) as http:
        asked = http.post(f"/api/v1/people/{person_id}/bolus-requests",
                          json={"carbs_g": 20, "glucose_mg_dl": 160}, headers=auth)  # fmt: skip
        if asked.status_code != 201:
            return f"request_{asked.status_code}"
        request_id = asked.json()["request_id"]
        confirmed = http.post(
            f"/api/v1/people/{person_id}/bolus-requests/{request_id}/confirm", headers=auth
        )
        return "issued" if confirmed.status_code == 200 else f"confirm_{confirmed.status_code}"


def test_concurrent_boluses_one_per_decision_window(platform: Platform) -> None:
    http = httpx.Client(base_url=platform.base_url, timeout=30, follow_redirects=False)
    person = _account(http, "person")
    caregiver = _account(http, "caregiver")
    clinician = _account(http, "clinician")
    developer = _account(http, "caregiver")
    auth = {"person": _sign_in(http, person), "caregiver": _sign_in(http, caregiver)}
    invitation = http.post(f"/api/v1/people/{person['id']}/invitations",
                           json={"permissions": {"view": True, "remote_bolus": True}},
                           headers=auth["person"])  # fmt: skip
    assert invitation.status_code == 201, invitation.text
    accepted = http.post("/api/v1/invitations/accept", json={"token": invitation.json()["token"]},
                         headers=auth["caregiver"])  # fmt: skip
    assert accepted.status_code == 200, accepted.text
    body = {"settings": copy.deepcopy(VALID_SETTINGS), "expected_version": 0}
    put = http.put(f"/api/v1/people/{person['id']}/therapy-settings", json=body,
                   headers=auth["person"])  # fmt: skip
    assert put.status_code == 200, put.text
    # The engine learns the settings and the person's hub (from a reading), as from Kafka.
    platform.publish("therapy", person["id"], settings_changed(person["id"]))
    # Wait until the engine has stored them (its consumer may join the group late).
    _wait_settings(platform.engine_port, person["id"])
    # A partner app the person consented to (read scopes: the only kind there is).
    app = http.post("/api/v1/developer/apps", json={"name": "Partner", "redirect_uris": [REDIRECT]},
                    headers=_sign_in(http, developer))  # fmt: skip
    assert app.status_code == 201, app.text
    verifier, challenge = pkce()
    person_for_consent = {"email": person["email"]}
    given = consent(http, authorize_params(app.json()["client_id"], challenge, "glucose.read"),
                    person_for_consent)  # fmt: skip
    code = parse_qs(urlsplit(given.headers["location"]).query)["code"][0]
    partner = exchange(http, app.json()["client_id"], code, verifier)
    assert partner.status_code == 200, partner.text

    outcomes: Counter[str] = Counter()
    actor_names = ("person", "caregiver", "clinician", "partner")
    by_actor: dict[str, Counter[str]] = {a: Counter() for a in actor_names}
    windows: list[tuple[datetime, datetime]] = []
    for window in range(WINDOWS):
        started = platform.clock.now()
        platform.publish("readings", person["id"],
                         reading(person["id"], started - timedelta(seconds=30), 160.0))  # fmt: skip
        time.sleep(1.0)  # the engine has the fresh reading
        tokens = {
            "person": _sign_in(http, person),
            "caregiver": _sign_in(http, caregiver),
            "clinician": _sign_in(http, clinician),
            "partner": {"Authorization": f"Bearer {partner.json()['access_token']}"},
        }
        if window:  # the partner's token is short-lived too: rotate it as an app would
            refreshed = http.post("/oauth/token", data={
                "grant_type": "refresh_token", "client_id": app.json()["client_id"],
                "refresh_token": partner.json()["refresh_token"]})  # fmt: skip
            if refreshed.status_code == 200:
                partner = refreshed
                tokens["partner"] = {"Authorization": f"Bearer {partner.json()['access_token']}"}
        actors = [list(tokens)[n % 4] for n in range(ATTEMPTS // WINDOWS)]
        barrier = threading.Barrier(len(actors))

        def fire(actor: str, tokens: dict[str, dict[str, str]] = tokens,
                 barrier: threading.Barrier = barrier) -> tuple[str, str]:  # fmt: skip
            barrier.wait(30)
            return actor, _attempt(platform.base_url, person["id"], tokens[actor])

        with ThreadPoolExecutor(max_workers=len(actors)) as pool:
            for actor, outcome in pool.map(fire, actors):
                outcomes[outcome] += 1
                by_actor[actor][outcome] += 1
        ended = platform.clock.now()
        windows.append((started, ended))
        # Next window: after the decision window has passed.
        while platform.clock.now() < started + timedelta(seconds=WINDOW_S + 5):
            time.sleep(0.1)
    http.close()
    time.sleep(2.0)  # the engine's outbox relay publishes the queued commands

    # Manual commands go to the engine's configured commands topic, as automatic ones do: a
    # bolus queued anywhere else would be missing here and fail the count below.
    envelopes = [
        e for e in _read_all(platform.kafka, platform.topics["commands"]) if e.key == person["id"]
    ]
    commands = []
    for envelope in envelopes:
        signed = device_pb2.SignedPumpCommand.FromString(envelope.data)
        command = device_pb2.PumpCommand.FromString(signed.command)
        if command.WhichOneof("action") == "deliver_bolus" and not command.deliver_bolus.automatic:
            commands.append(command)
    per_window = [
        sum(1 for c in commands if start <= c.issued_at.ToDatetime().replace(
            tzinfo=start.tzinfo) <= end + timedelta(seconds=60))
        for start, end in windows
    ]  # fmt: skip
    print(f"outcomes={dict(outcomes)} by_actor={ {a: dict(c) for a, c in by_actor.items()} } "
          f"commands={len(commands)} per_window={per_window}")  # fmt: skip
    record_figure("bolus_attempts", sum(outcomes.values()))
    record_figure("bolus_max_issued_per_window", max(per_window))
    assert sum(outcomes.values()) == ATTEMPTS
    assert max(per_window) <= 1
    assert len({c.command_id for c in commands}) == outcomes["issued"] <= WINDOWS
    assert outcomes["issued"] >= 1, "no bolus went through at all: nothing was tested"
    # Neither the unrelated clinician nor the partner app can even ask.
    assert by_actor["clinician"]["issued"] == by_actor["partner"]["issued"] == 0
    assert not any(k.startswith(("confirm_5", "request_5")) for k in outcomes)
