"""Live stream: who receives what (WebSocket over the app's ASGI interface)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.stream.hub import StreamHub, Subscriber
from services.runtime.clock import FixedClock
from tests.gateway.conftest import follow, make_user


@pytest.fixture
def stream_client(
    settings: GatewaySettings, clock: FixedClock, engine: Engine
) -> Iterator[TestClient]:
    fast = settings.model_copy(update={"stream_recheck_s": 0.2})
    with TestClient(create_app(fast, clock, engine=engine)) as client:
        yield client


def _hub(client: TestClient) -> StreamHub:
    hub = client.app.state.stream_hub  # type: ignore[attr-defined]
    assert isinstance(hub, StreamHub)
    return hub


def _reading(glucose: int) -> dict[str, Any]:
    return {"record_id": f"r{glucose}", "glucose_mg_dl": glucose, "trend": "Flat"}


def _wait_for(predicate: Any, timeout_s: float = 5) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_follower_receives_readings_stranger_and_revoked_do_not(
    stream_client: TestClient,
) -> None:
    c = stream_client
    ada, mum, eve = make_user(c), make_user(c, "caregiver"), make_user(c, "caregiver")
    follow(c, ada, mum, view=True)
    hub = _hub(c)
    with (
        c.websocket_connect(
            "/api/v1/stream", subprotocols=["langerhans.v1", f"bearer.{mum.access}"]
        ) as mws,
        c.websocket_connect("/api/v1/stream") as ews,
    ):
        assert mws.receive_json()["type"] == "ready"
        ews.send_json({"type": "auth", "access_token": eve.access})
        assert ews.receive_json()["type"] == "ready"
        mws.send_json({"type": "subscribe", "person_ids": [ada.id]})
        ews.send_json({"type": "subscribe", "person_ids": [ada.id]})
        assert mws.receive_json() == {"type": "subscribed", "person_ids": [ada.id], "refused": []}
        assert ews.receive_json() == {"type": "subscribed", "person_ids": [], "refused": [ada.id]}
        hub.publish_threadsafe(ada.id, "reading", _reading(123))
        got = mws.receive_json()
        assert got["type"] == "reading"
        assert got["data"]["glucose_mg_dl"] == 123
        # The stranger got nothing: the next thing on its socket is the answer to a ping.
        ews.send_json({"type": "ping"})
        assert ews.receive_json() == {"type": "pong"}
        # Alerts need receive_alerts, which mum lacks.
        hub.publish_threadsafe(ada.id, "alert", {"alert_id": "a"})
        mws.send_json({"type": "ping"})
        assert mws.receive_json() == {"type": "pong"}
        # Revoke: the next re-check drops the subscription; later readings do not arrive.
        shares = c.get(f"/api/v1/people/{ada.id}/shares", headers=ada.auth).json()
        share_id = shares[0]["share_id"]
        revoked = c.delete(f"/api/v1/people/{ada.id}/shares/{share_id}", headers=ada.auth)
        assert revoked.status_code == 204
        dropped = mws.receive_json()
        assert dropped == {"type": "unsubscribed", "person_id": ada.id, "reason": "access revoked"}
        hub.publish_threadsafe(ada.id, "reading", _reading(99))
        mws.send_json({"type": "ping"})
        assert mws.receive_json() == {"type": "pong"}


def test_bad_token_is_refused_and_token_never_in_url(stream_client: TestClient) -> None:
    with stream_client.websocket_connect("/api/v1/stream") as ws:
        ws.send_json({"type": "auth", "access_token": "not-a-token"})
        got = ws.receive_json()
        assert got["type"] == "error"
        assert got["code"] == "unauthenticated"
    with stream_client.websocket_connect("/api/v1/stream?access_token=x") as ws:
        ws.send_json({"type": "subscribe", "person_ids": ["x"]})
        assert ws.receive_json()["code"] == "unauthenticated"


@pytest.mark.anyio
async def test_slow_subscriber_drops_oldest_with_gap_marker() -> None:
    hub = StreamHub()
    slow = Subscriber(max_queue=3, wants=lambda _p, _t: True)
    fast = Subscriber(max_queue=3, wants=lambda _p, _t: True)
    hub.subscribe("p", slow)
    hub.subscribe("p", fast)
    for i in range(5):
        hub.publish("p", "reading", {"i": i})
        if i < 3:
            assert len(await fast.next_batch()) == 1
    batch = await slow.next_batch()
    assert '"gap"' in batch[0]
    assert '"dropped": 2' in batch[0]
    assert [m for m in batch[1:] if '"i": 4' in m]
    assert len(batch) == 4
