"""Webhook (real HTTP server) and e-mail (real SMTP server) delivery: signed, retried, once."""

from __future__ import annotations

import email
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from services.alerts.channels import (
    DeliveryWorker,
    EmailSender,
    WebhookSender,
    backoff_s,
    sign,
    verify,
)
from services.alerts.lifecycle import AlertState, Tier
from services.alerts.model import AlertKind
from services.alerts.repository import AlertRepository
from services.alerts.service import Channel, DeliveryStatus, EscalationPlan, Recipient
from services.runtime.clock import FixedClock
from tests.alerts.helpers import Harness, Receiver, RecordingEvents, make_engine

SECRET = b"test-secret"
T0 = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[email.message.Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = _free_port()
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


def _setup(tmp_path: Path, receiver: Receiver, smtp_port: int):
    _engine, sessions = make_engine(tmp_path)
    clock = FixedClock(T0)
    plan = EscalationPlan(
        (
            Recipient("person", Tier.PERSON, Channel.WEBHOOK, receiver.url),
            Recipient("mum", Tier.CAREGIVER, Channel.EMAIL, "mum@example.org"),
        )
    )
    events = RecordingEvents()
    harness = Harness(sessions, clock, events, plan)
    senders = {
        Channel.WEBHOOK: WebhookSender(SECRET).send,
        Channel.EMAIL: EmailSender("127.0.0.1", smtp_port, "alerts@langerhans.test").send,
    }
    worker = DeliveryWorker(sessions, lambda _session: events, clock, senders, parallel=2)
    return harness, worker


def test_signature_round_trip_and_replay_window() -> None:
    body = b'{"a": 1}'
    signature = sign(SECRET, 1_000_000, body)
    assert verify(SECRET, 1_000_000, body, signature, now_s=1_000_010)
    assert not verify(SECRET, 1_000_000, body + b" ", signature, now_s=1_000_010)
    assert not verify(b"other", 1_000_000, body, signature, now_s=1_000_010)
    assert not verify(SECRET, 1_000_000, body, signature, now_s=1_000_000 + 301)
    assert [backoff_s(n) for n in (1, 2, 3, 10)] == [5, 10, 20, 600]


def test_urgent_low_reaches_webhook_then_caregiver_email_once(
    tmp_path: Path, receiver: Receiver, mailbox: tuple[Mailbox, int]
) -> None:
    box, port = mailbox
    harness, worker = _setup(tmp_path, receiver, port)
    with harness.service() as (service, _):
        service.on_reading("p1", T0, 48, -1.0)
    assert worker.run_once() == 1
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert verify(
        SECRET, request["timestamp"], request["body"], request["signature"], T0.timestamp()
    )
    payload = json.loads(request["body"])
    assert payload["type"] == "urgent_low"
    assert payload["tier"] == 0
    with harness.service() as (_, repository):
        alert = repository.open_alerts("p1")[AlertKind.URGENT_LOW]
    assert alert.state is AlertState.NOTIFIED  # marked once the webhook took it

    # Unacknowledged for 5 minutes: the caregiver is e-mailed.
    harness.clock.advance(5 * 60)
    with harness.service() as (service, _):
        service.tick()
    worker.run_once()
    assert len(box.messages) == 1
    message = box.messages[0]
    assert message["To"] == "mum@example.org"
    assert "urgent low" in message["Subject"]
    assert message["Message-ID"].endswith("@langerhans.local>")
    # Nothing is sent twice.
    assert worker.run_once() == 0
    assert len(receiver.requests) == 1
    assert len(box.messages) == 1
    worker.close()


def test_webhook_retries_with_backoff(tmp_path: Path, receiver: Receiver) -> None:
    harness, worker = _setup(tmp_path, receiver, _free_port())
    receiver.fail_next = 2
    with harness.service() as (service, _):
        service.on_reading("p1", T0, 48, None)
    worker.run_once()
    assert not receiver.requests
    assert worker.run_once() == 0  # not due before the backoff
    harness.clock.advance(5)
    worker.run_once()
    harness.clock.advance(10)
    worker.run_once()
    assert len(receiver.requests) == 1
    with harness.sessions() as session:
        alert = AlertRepository(session).open_alerts("p1")[AlertKind.URGENT_LOW]
        [delivery] = AlertRepository(session).deliveries_of(alert.alert_id)
    assert delivery.status is DeliveryStatus.DELIVERED
    assert delivery.attempts == 3
    worker.close()


def test_crash_after_send_resends_with_the_same_key(tmp_path: Path, receiver: Receiver) -> None:
    harness, worker = _setup(tmp_path, receiver, _free_port())
    with harness.service() as (service, _):
        service.on_reading("p1", T0, 48, None)

    def crash(*_args: object) -> None:
        raise SystemExit("killed between sending and recording")

    worker._record = crash
    with pytest.raises(SystemExit):
        worker.run_once()
    worker.close()
    _h2, restarted = _setup(tmp_path, receiver, _free_port())
    restarted.run_once()
    counts = receiver.distinct()
    assert len(receiver.requests) == 2  # the receiver saw the retry …
    assert list(counts.values()) == [2]  # … with the same key, so it shows one notification
    assert restarted.run_once() == 0
    restarted.close()
