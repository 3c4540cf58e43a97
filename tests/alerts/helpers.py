"""Shared set-up for alerts tests: a migrated SQLite store and a recording event sink."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.alerts.channels import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from services.alerts.lifecycle import Alert, AlertState
from services.alerts.repository import AlertRepository, metadata
from services.alerts.service import AlertsService, Delivery, EscalationPlan
from services.runtime import migrations
from services.runtime.clock import Clock
from services.runtime.db import create_service_engine, session_scope


@dataclass
class RecordingEvents:
    changes: list[tuple[str, str, AlertState | None, str]] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)

    def alert_changed(self, alert: Alert, previous: AlertState | None, reason: str) -> None:
        self.changes.append((alert.alert_id, alert.kind.value, previous, reason))

    def delivery_recorded(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)


def make_engine(tmp_path: Path) -> tuple[Engine, sessionmaker[Session]]:
    url = f"sqlite:///{tmp_path / 'alerts.sqlite3'}"
    migrations.upgrade("alerts", database_url=url, target_metadata=metadata)
    engine = create_service_engine("alerts", url)
    return engine, sessionmaker(engine, expire_on_commit=False)


@dataclass
class Harness:
    sessions: sessionmaker[Session]
    clock: Clock
    events: RecordingEvents
    plan: EscalationPlan | None = None

    @contextmanager
    def service(self) -> Iterator[tuple[AlertsService, AlertRepository]]:
        with session_scope(self.sessions) as session:
            repository = AlertRepository(session, self.plan)
            yield AlertsService(repository, self.events, self.clock), repository


class Receiver:
    """A webhook endpoint as a real one must behave when senders can die mid-request.

    A request without Content-Length, with a body shorter than it (a sender SIGKILLed between
    writing the headers and the body) or, when `secret` is given, with a signature that does
    not verify against the wall clock, is not a delivery: it is refused (counted in `refused`
    by reason) and the sender retries. Accepted requests are all kept, so re-sends under the
    same Idempotency-Key stay visible to the test.
    """

    def __init__(self, secret: bytes | None = None) -> None:
        self.requests: list[dict[str, Any]] = []
        self.refused: dict[str, int] = {}
        self.fail_next = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                outcome = self._check()
                if outcome is not None:
                    reason, status = outcome
                    with receiver.lock:
                        receiver.refused[reason] = receiver.refused.get(reason, 0) + 1
                    try:
                        self.send_response(status)
                        self.end_headers()
                    except OSError:
                        pass  # the sender is gone; nothing to answer
                    self.close_connection = True
                    return
                self.send_response(204)
                self.end_headers()

            def _check(self) -> tuple[str, int] | None:
                """Record the request when it is a delivery; else (reason, HTTP status)."""
                try:
                    length = int(self.headers["Content-Length"])
                    timestamp = int(self.headers[TIMESTAMP_HEADER])
                except (KeyError, TypeError, ValueError):
                    return "no_length_or_timestamp", 400
                body = self.rfile.read(length)
                if len(body) < length:
                    return "truncated_body", 400
                signature = self.headers[SIGNATURE_HEADER] or ""
                if secret is not None and not verify(
                    secret, timestamp, body, signature, time.time()
                ):
                    return "bad_signature", 401
                with receiver.lock:
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        return "told_to_fail", 503
                    receiver.requests.append(
                        {
                            "key": self.headers[IDEMPOTENCY_HEADER],
                            "timestamp": timestamp,
                            "signature": signature,
                            "body": body,
                        }
                    )
                return None

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.requests)

    def distinct(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for request in self.requests:
            counts[request["key"]] = counts.get(request["key"], 0) + 1
        return counts

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
