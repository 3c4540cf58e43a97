"""Shared set-up for alerts tests: a migrated SQLite store and a recording event sink."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.alerts.channels import SIGNATURE_HEADER, TIMESTAMP_HEADER
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
    """A webhook endpoint that verifies signatures and dedupes by Idempotency-Key."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.fail_next = 0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    if receiver.fail_next > 0:
                        receiver.fail_next -= 1
                        self.send_response(503)
                        self.end_headers()
                        return
                    receiver.requests.append(
                        {
                            "key": self.headers["Idempotency-Key"],
                            "timestamp": int(self.headers[TIMESTAMP_HEADER]),
                            "signature": self.headers[SIGNATURE_HEADER],
                            "body": body,
                        }
                    )
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def distinct(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for request in self.requests:
            counts[request["key"]] = counts.get(request["key"], 0) + 1
        return counts

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
