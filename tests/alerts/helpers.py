"""Shared set-up for alerts tests: a migrated SQLite store and a recording event sink."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

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
