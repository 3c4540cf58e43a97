"""The gateway's Prometheus metrics live on their own port, not on the public HTTP port.

The public port is what the Ingress exposes; metrics (routes, volumes, timings) are for the
cluster's scraper only, on `LANGERHANS_METRICS_PORT` as every gRPC service serves them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from gateway.observability import start_metrics_server
from gateway.settings import GatewaySettings
from services.runtime.settings import REPO_ROOT
from tests.gateway.conftest import make_user


def test_metrics_on_their_own_port_with_route_templates(
    client: TestClient, settings: GatewaySettings
) -> None:
    user = make_user(client)
    for _ in range(3):
        got = client.get(f"/api/v1/people/{user.id}/glucose", headers=user.auth)
        assert got.status_code == 200
    assert client.get(f"/api/v1/people/{user.id}/glucose").status_code == 401
    # Not on the public port (the Ingress would expose it).
    public = client.get("/metrics")
    assert public.status_code == 404
    assert "gateway_http_requests_total" not in public.text
    registry = client.app.state.metrics.registry  # type: ignore[attr-defined]
    server = start_metrics_server(settings.model_copy(update={"metrics_port": 0}), registry)
    try:
        assert server.port not in (0, settings.http_port)
        scraped = httpx.get(server.url, timeout=10).text
    finally:
        server.stop()
    glucose = 'method="GET",route="/api/v1/people/{person_id}/glucose"'
    assert f'gateway_http_requests_total{{{glucose},status="200"}} 3.0' in scraped
    assert f'gateway_http_requests_total{{{glucose},status="401"}} 1.0' in scraped
    assert f"gateway_http_request_duration_seconds_count{{{glucose}}} 4.0" in scraped
    assert "gateway_http_request_duration_seconds_bucket" in scraped
    assert user.id not in scraped  # ids are never label values


def test_metrics_port_must_differ_from_the_http_port() -> None:
    with pytest.raises(ValidationError, match="METRICS_PORT must differ"):
        GatewaySettings(environment="test", http_port=8123, metrics_port=8123)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, deadline: float, log: Path) -> httpx.Response:
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            assert time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)


def test_langerhans_serve_gateway_splits_the_ports(tmp_path: Path) -> None:
    """`langerhans serve gateway` as the chart runs it: API on the HTTP port, metrics on the
    metrics port, and neither answers the other's path."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from tests.gateway.conftest import pem_of

    http_port, metrics_port = _free_port(), _free_port()
    env = {
        **os.environ,
        "LANGERHANS_ENVIRONMENT": "test",
        "LANGERHANS_VAR_DIR": str(tmp_path / "var"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'gateway.sqlite3'}",
        "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # the outbox relay just waits for a broker
        "LANGERHANS_HTTP_PORT": str(http_port),
        "LANGERHANS_METRICS_PORT": str(metrics_port),
        "LANGERHANS_JWT_PRIVATE_KEY_PEM": pem_of(Ed25519PrivateKey.generate()),
        "LANGERHANS_SECRET_PEPPER": "p" * 40,
        "LANGERHANS_LOG_JSON": "false",
    }
    log = tmp_path / "gateway.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "serve", "gateway"],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        health = _wait_http(f"http://127.0.0.1:{http_port}/healthz", deadline, log)
        assert health.status_code == 200
        assert httpx.get(f"http://127.0.0.1:{http_port}/metrics").status_code == 404
        scraped = _wait_http(f"http://127.0.0.1:{metrics_port}/metrics", deadline, log)
        assert scraped.status_code == 200
        assert 'gateway_http_requests_total{method="GET",route="/healthz",status="200"}' in (
            scraped.text
        )
        # The metrics port serves no API.
        api = httpx.get(f"http://127.0.0.1:{metrics_port}/.well-known/jwks.json")
        assert '"keys"' not in api.text
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
