"""Delivery channels and the worker that sends recorded deliveries exactly as recorded.

A delivery is recorded (intent) in the same transaction as the alert round that caused it.
The worker sends due deliveries and marks them sent afterwards. If the process dies between
sending and marking, the delivery is sent again after the restart *with the same key*: the
webhook `Idempotency-Key` header and the e-mail `Message-ID` let the receiver drop the
repeat, so a person is never notified twice for the same round, and never not at all.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import smtplib
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import timedelta
from email.message import EmailMessage
from email.utils import formatdate

import httpx
from sqlalchemy.orm import Session, sessionmaker

from services.alerts.lifecycle import AlertState, mark_notified
from services.alerts.service import (
    MAX_DELIVERY_ATTEMPTS,
    AlertEvents,
    Channel,
    Delivery,
    DeliveryStatus,
)
from services.runtime.clock import Clock
from services.runtime.db import session_scope

__all__ = [
    "SIGNATURE_HEADER",
    "TIMESTAMP_HEADER",
    "DeliveryWorker",
    "EmailSender",
    "WebhookSender",
    "backoff_s",
    "sign",
    "verify",
]

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Langerhans-Signature"
TIMESTAMP_HEADER = "X-Langerhans-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_TOLERANCE_S = 300


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """`v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`."""
    digest = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"v1={digest}"


def verify(secret: bytes, timestamp: int, body: bytes, signature: str, now_s: float) -> bool:
    """What a receiver does: constant-time compare, and refuse stale timestamps (replays)."""
    if abs(now_s - timestamp) > SIGNATURE_TOLERANCE_S:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


def backoff_s(attempt: int) -> float:
    """Seconds before retry `attempt` (1-based): 5 s doubling, at most 10 min."""
    return float(min(600, 5 * 2 ** max(0, attempt - 1)))


def payload(delivery: Delivery) -> dict[str, object]:
    return {
        "delivery_id": delivery.delivery_id,
        "alert_id": delivery.alert_id,
        "patient_id": delivery.patient_id,
        "recipient_id": delivery.recipient_id,
        "type": delivery.kind.value,
        "severity": delivery.severity.value,
        "tier": int(delivery.tier),
        "notification": delivery.notification_no,
        "title": delivery.subject,
        "message": delivery.body,
    }


class SendError(Exception):
    """The channel did not take the message (retry later)."""


@dataclass
class WebhookSender:
    secret: bytes
    timeout_s: float = 5.0

    def __post_init__(self) -> None:
        self._local = threading.local()

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = httpx.Client(timeout=self.timeout_s)
            self._local.client = client
        return client

    def send(self, delivery: Delivery, now_s: float) -> None:
        body = json.dumps(payload(delivery), sort_keys=True).encode()
        timestamp = int(now_s)
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: str(timestamp),
            SIGNATURE_HEADER: sign(self.secret, timestamp, body),
            IDEMPOTENCY_HEADER: delivery.delivery_id,
        }
        try:
            response = self._client().post(delivery.address, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise SendError(f"webhook: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 300:
            raise SendError(f"webhook: HTTP {response.status_code}")


@dataclass
class EmailSender:
    host: str
    port: int
    sender: str
    message_id_domain: str = "langerhans.local"
    timeout_s: float = 10.0

    def send(self, delivery: Delivery, now_s: float) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = delivery.address
        message["Subject"] = delivery.subject
        message["Date"] = formatdate(now_s)
        # Stable per delivery: a re-send after a crash carries the same id.
        message["Message-ID"] = f"<{delivery.delivery_id}@{self.message_id_domain}>"
        message.set_content(
            f"{delivery.body}\n\nAlert {delivery.alert_id}, notification "
            f"{delivery.notification_no}, tier {int(delivery.tier)}."
        )
        try:
            with smtplib.SMTP(self.host, self.port, timeout=self.timeout_s) as smtp:
                smtp.send_message(message)
        except (OSError, smtplib.SMTPException) as exc:
            raise SendError(f"smtp: {type(exc).__name__}: {exc}") from exc


Sender = Callable[[Delivery, float], None]


class DeliveryWorker:
    """Sends due webhook and e-mail deliveries; one storage transaction per outcome."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        events: Callable[[Session], AlertEvents],
        clock: Clock,
        senders: Mapping[Channel, Sender],
        *,
        parallel: int = 8,
        batch: int = 200,
    ) -> None:
        self._sessions = sessions
        self._events = events
        self._clock = clock
        self._senders = senders
        self._pool = ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="delivery")
        self._batch = batch

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def run_once(self) -> int:
        """Send every due delivery once; returns how many were attempted."""
        from services.alerts.repository import AlertRepository

        now = self._clock.now()
        with self._sessions() as session:
            due = AlertRepository(session).due_deliveries(now, self._batch)
        if not due:
            return 0
        results = list(self._pool.map(self._attempt, due))
        for delivery, error in zip(due, results, strict=True):
            self._record(delivery, error)
        return len(due)

    def _attempt(self, delivery: Delivery) -> str | None:
        sender = self._senders.get(delivery.channel)
        if sender is None:
            return f"no sender configured for {delivery.channel}"
        try:
            sender(delivery, self._clock.now().timestamp())
        except SendError as exc:
            return str(exc)
        except Exception as exc:
            log.exception("delivery %s failed unexpectedly", delivery.delivery_id)
            return f"{type(exc).__name__}: {exc}"
        return None

    def _record(self, delivery: Delivery, error: str | None) -> None:
        from services.alerts.repository import AlertRepository

        now = self._clock.now()
        attempts = delivery.attempts + 1
        if error is None:
            updated = replace(
                delivery,
                status=DeliveryStatus.DELIVERED,
                attempts=attempts,
                sent_at=now,
                next_attempt_at=None,
                last_error="",
            )
        elif attempts >= MAX_DELIVERY_ATTEMPTS:
            updated = replace(
                delivery,
                status=DeliveryStatus.GAVE_UP,
                attempts=attempts,
                next_attempt_at=None,
                last_error=error,
            )
        else:
            updated = replace(
                delivery,
                status=DeliveryStatus.FAILED,
                attempts=attempts,
                next_attempt_at=now + timedelta(seconds=backoff_s(attempts)),
                last_error=error,
            )
        with session_scope(self._sessions) as session:
            repository = AlertRepository(session)
            repository.save_delivery(updated)
            events = self._events(session)
            events.delivery_recorded(updated)
            if updated.status is DeliveryStatus.DELIVERED:
                alert = repository.get_alert(delivery.alert_id)
                if alert is not None and alert.state is AlertState.RAISED:
                    mark_notified(alert, now)
                    repository.save_alert(alert)
                    events.alert_changed(alert, AlertState.RAISED, "notified")
