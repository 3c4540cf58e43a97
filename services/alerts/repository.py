"""alerts storage: the only module that queries its tables. Never commits."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    Integer,
    String,
    Table,
    Text,
    bindparam,
    func,
    or_,
    select,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.alerts.lifecycle import Alert, AlertState, Tier, next_due
from services.alerts.model import AlertKind, AlertSettings, PatientState, Severity
from services.alerts.service import (
    Channel,
    Delivery,
    DeliveryStatus,
    EscalationPlan,
    Recipient,
)
from services.runtime.db import new_metadata, sqlite_driver
from services.runtime.kafka import dedupe

__all__ = ["AlertRepository", "BatchView", "StateCache", "alerts", "deliveries", "metadata"]

metadata = new_metadata()

patient_states = Table(
    "patient_states",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("state_json", Text, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
)

alert_settings = Table(
    "alert_settings",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("settings_json", Text, nullable=False),
)

escalation_plans = Table(
    "escalation_plans",
    metadata,
    Column("patient_id", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("plan_json", Text, nullable=False),
)

alerts = Table(
    "alerts",
    metadata,
    Column("alert_id", String(36), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("kind", String(40), nullable=False),
    Column("severity", String(10), nullable=False),
    Column("state", String(14), nullable=False),
    # "patient|kind" while open, NULL once resolved: at most one open alert per kind.
    Column("open_key", String(120), nullable=True, unique=True),
    Column("message", Text, nullable=False),
    Column("value", Float, nullable=True),
    Column("raised_at_us", BigInteger, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
    Column("tier", Integer, nullable=False),
    Column("notification_count", Integer, nullable=False),
    Column("next_escalation_at_us", BigInteger, nullable=True),
    Column("next_repeat_at_us", BigInteger, nullable=True),
    Column("snoozed_until_us", BigInteger, nullable=True),
    Column("acknowledged_at_us", BigInteger, nullable=True),
    Column("acknowledged_by", String(64), nullable=False),
    Column("resolved_at_us", BigInteger, nullable=True),
    # Earliest timer of the alert; the scheduler's index.
    Column("next_due_us", BigInteger, nullable=True, index=True),
    Index("ix_alerts_patient_raised", "patient_id", "raised_at_us"),
)

deliveries = Table(
    "deliveries",
    metadata,
    Column("delivery_id", String(36), primary_key=True),
    Column("delivery_key", String(300), nullable=False, unique=True),
    Column("alert_id", String(36), nullable=False, index=True),
    Column("patient_id", String(64), nullable=False),
    Column("recipient_id", String(64), nullable=False),
    Column("channel", String(10), nullable=False),
    Column("address", String(500), nullable=False),
    Column("tier", Integer, nullable=False),
    Column("notification_no", Integer, nullable=False),
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at_us", BigInteger, nullable=True, index=True),
    Column("created_at_us", BigInteger, nullable=False),
    Column("sent_at_us", BigInteger, nullable=True),
    Column("last_error", String(500), nullable=False),
    Column("subject", String(200), nullable=False),
    Column("body", Text, nullable=False),
    Column("kind", String(40), nullable=False),
    Column("severity", String(10), nullable=False),
)

dedupe.include_in(metadata)
_RETRYABLE = [DeliveryStatus.PENDING.value, DeliveryStatus.FAILED.value]

# Prepared once: building a statement per call costs more than running it (hot path).
_select_state = select(patient_states.c.state_json).where(
    patient_states.c.patient_id == bindparam("b_patient")
)
_update_state = (
    update(patient_states)
    .where(patient_states.c.patient_id == bindparam("b_patient"))
    .values(state_json=bindparam("b_json"), updated_at_us=bindparam("b_at"))
)
_insert_state = patient_states.insert()
_SQLITE_UPDATE_STATE = (
    "UPDATE patient_states SET state_json = ?, updated_at_us = ? WHERE patient_id = ?"
)
_SQLITE_INSERT_STATE = (
    "INSERT INTO patient_states (patient_id, state_json, updated_at_us) VALUES (?, ?, ?)"
)
_select_settings = select(alert_settings.c.settings_json).where(
    alert_settings.c.patient_id == bindparam("b_patient")
)
_select_open = select(alerts).where(
    alerts.c.patient_id == bindparam("b_patient"), alerts.c.open_key.is_not(None)
)


_insert_alert = alerts.insert()
_ALERT_COLUMNS = tuple(c.name for c in alerts.columns)
_ALERT_COLUMNS_SQL = ", ".join(_ALERT_COLUMNS)
_select_delivery_key = select(deliveries.c.delivery_id).where(
    deliveries.c.delivery_key == bindparam("b_key")
)
_insert_delivery = deliveries.insert()
_select_plan = select(escalation_plans.c.plan_json).where(
    escalation_plans.c.patient_id == bindparam("b_patient")
)
_update_alert = (
    update(alerts)
    .where(alerts.c.alert_id == bindparam("b_alert_id"))
    .values({c.name: bindparam(f"b_{c.name}") for c in alerts.columns if c.name != "alert_id"})
)


def _us(value: datetime | None) -> int | None:
    return None if value is None else round(value.timestamp() * 1_000_000)


def _dt(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1_000_000, UTC)


def _alert_values(alert: Alert) -> dict[str, object]:
    return {
        "alert_id": alert.alert_id,
        "patient_id": alert.patient_id,
        "kind": alert.kind.value,
        "severity": alert.severity.value,
        "state": alert.state.value,
        "open_key": f"{alert.patient_id}|{alert.kind.value}" if alert.open else None,
        "message": alert.message,
        "value": alert.value,
        "raised_at_us": _us(alert.raised_at),
        "updated_at_us": _us(alert.updated_at),
        "tier": int(alert.tier),
        "notification_count": alert.notification_count,
        "next_escalation_at_us": _us(alert.next_escalation_at),
        "next_repeat_at_us": _us(alert.next_repeat_at),
        "snoozed_until_us": _us(alert.snoozed_until),
        "acknowledged_at_us": _us(alert.acknowledged_at),
        "acknowledged_by": alert.acknowledged_by,
        "resolved_at_us": _us(alert.resolved_at),
        "next_due_us": _us(next_due(alert)),
    }


def _alert(row: object) -> Alert:
    return _alert_from(row._mapping)  # type: ignore[attr-defined]


def _alert_from(m: Mapping[str, Any]) -> Alert:
    raised = _dt(m["raised_at_us"])
    updated = _dt(m["updated_at_us"])
    assert raised is not None
    assert updated is not None
    return Alert(
        alert_id=m["alert_id"],
        patient_id=m["patient_id"],
        kind=AlertKind(m["kind"]),
        severity=Severity(m["severity"]),
        state=AlertState(m["state"]),
        message=m["message"],
        value=m["value"],
        raised_at=raised,
        updated_at=updated,
        tier=Tier(m["tier"]),
        notification_count=m["notification_count"],
        next_escalation_at=_dt(m["next_escalation_at_us"]),
        next_repeat_at=_dt(m["next_repeat_at_us"]),
        snoozed_until=_dt(m["snoozed_until_us"]),
        acknowledged_at=_dt(m["acknowledged_at_us"]),
        acknowledged_by=m["acknowledged_by"],
        resolved_at=_dt(m["resolved_at_us"]),
    )


def _delivery(row: object) -> Delivery:
    m = row._mapping  # type: ignore[attr-defined]
    created = _dt(m["created_at_us"])
    assert created is not None
    return Delivery(
        delivery_id=m["delivery_id"],
        delivery_key=m["delivery_key"],
        alert_id=m["alert_id"],
        patient_id=m["patient_id"],
        recipient_id=m["recipient_id"],
        channel=Channel(m["channel"]),
        address=m["address"],
        tier=Tier(m["tier"]),
        notification_no=m["notification_no"],
        status=DeliveryStatus(m["status"]),
        attempts=m["attempts"],
        next_attempt_at=_dt(m["next_attempt_at_us"]),
        created_at=created,
        subject=m["subject"],
        body=m["body"],
        kind=AlertKind(m["kind"]),
        severity=Severity(m["severity"]),
        sent_at=_dt(m["sent_at_us"]),
        last_error=m["last_error"],
    )


def plan_to_json(plan: EscalationPlan) -> str:
    return json.dumps(
        {
            "recipients": [
                [r.recipient_id, int(r.tier), r.channel.value, r.address] for r in plan.recipients
            ],
            "tier_delays_min": list(plan.tier_delays_min),
            "min_escalation_severity": plan.min_escalation_severity.value,
        }
    )


def plan_from_json(text: str) -> EscalationPlan:
    data = json.loads(text)
    return EscalationPlan(
        recipients=tuple(
            Recipient(rid, Tier(tier), Channel(ch), addr)
            for rid, tier, ch, addr in data["recipients"]
        ),
        tier_delays_min=tuple(data["tier_delays_min"]),
        min_escalation_severity=Severity(data["min_escalation_severity"]),
    )


class StateCache:
    """Parsed person states of the consumer's last commits, keyed by the exact stored text.

    Parsing a person's JSON state and serialising it again was the largest part of the
    alerts consumer's CPU per reading. A state is taken out of the cache only when the text
    just read from the table is exactly the text it was written as (so any other writer,
    e.g. the scheduler or another process, simply misses the cache), is owned by one
    transaction from then on, and returns to the cache only after that transaction commits.
    """

    MAX_ENTRIES = 100_000

    def __init__(self) -> None:
        self._states: dict[str, tuple[str, PatientState]] = {}
        self._lock = threading.Lock()

    def take(self, patient_id: str, text: str) -> PatientState | None:
        with self._lock:
            entry = self._states.pop(patient_id, None)
        if entry is None or entry[0] != text:
            return None
        return entry[1]

    def put(self, written: Mapping[str, tuple[str, PatientState]]) -> None:
        with self._lock:
            self._states.update(written)
            while len(self._states) > self.MAX_ENTRIES:
                self._states.pop(next(iter(self._states)))


class BatchView:
    """What a consumer poll batch reads and writes about its people, in its own transaction.

    Loaded with three queries for all people of the batch instead of three per event; person
    states are written with one multi-row statement just before the commit. Alerts are still
    written at once (rare) and the view follows those writes, so every event of the batch
    sees exactly what it would see reading the tables.
    """

    def __init__(self, session: Session, cache: StateCache | None = None) -> None:
        self._session = session
        self._cache = cache
        # Texts written by this transaction, for the cache once it commits.
        self._written: dict[str, tuple[str, PatientState]] = {}
        self.states: dict[str, PatientState | None] = {}
        self.existing: set[str] = set()
        self.dirty: dict[str, tuple[PatientState, int]] = {}
        self.settings: dict[str, AlertSettings] = {}
        self.open_rows: dict[str, dict[str, dict[str, Any]]] = {}
        sa_event.listen(session, "before_commit", self._before_commit)
        if cache is not None:
            sa_event.listen(session, "after_commit", self._after_commit)

    @staticmethod
    def of(session: Session) -> BatchView | None:
        view: BatchView | None = session.info.get("alerts_batch")
        return view

    @staticmethod
    def start(
        session: Session, patient_ids: Iterable[str], cache: StateCache | None = None
    ) -> BatchView:
        view = BatchView.of(session)
        if view is None:
            view = BatchView(session, cache)
            session.info["alerts_batch"] = view
            view.load(set(patient_ids))
        return view

    def load(self, patient_ids: set[str]) -> None:
        wanted = [p for p in patient_ids if p not in self.states]
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            for patient in chunk:
                self.states[patient] = None
                self.settings[patient] = AlertSettings()
                self.open_rows[patient] = {}
            states, settings, open_alerts = self._select(chunk)
            for patient, text in states:
                state = self._cache.take(patient, text) if self._cache is not None else None
                if state is None:
                    state = PatientState.from_json(json.loads(text))
                self.states[patient] = state
                self.existing.add(patient)
            for patient, text in settings:
                self.settings[patient] = AlertSettings.from_json(json.loads(text))
            for values in open_alerts:
                self.open_rows[values["patient_id"]][values["alert_id"]] = values

    def _select(
        self, chunk: list[str]
    ) -> tuple[Iterable[Any], Iterable[Any], Iterable[dict[str, Any]]]:
        """(patient, state text), (patient, settings text) and open alert rows of `chunk`."""
        raw = sqlite_driver(self._session)
        if raw is not None:
            # Straight to the driver: building and compiling three IN-list statements per
            # batch cost more than running them (plain strings, numbers, NULL: the same
            # values SQLAlchemy returns for these columns).
            marks = ",".join("?" * len(chunk))  # placeholders only; values are bound
            states = raw.execute(
                "SELECT patient_id, state_json FROM patient_states"  # noqa: S608
                f" WHERE patient_id IN ({marks})",
                chunk,
            ).fetchall()
            settings = raw.execute(
                "SELECT patient_id, settings_json FROM alert_settings"  # noqa: S608
                f" WHERE patient_id IN ({marks})",
                chunk,
            ).fetchall()
            rows = raw.execute(
                f"SELECT {_ALERT_COLUMNS_SQL} FROM alerts"  # noqa: S608
                f" WHERE patient_id IN ({marks}) AND open_key IS NOT NULL",
                chunk,
            ).fetchall()
            return states, settings, [dict(zip(_ALERT_COLUMNS, r, strict=True)) for r in rows]
        states = self._session.execute(
            select(patient_states.c.patient_id, patient_states.c.state_json).where(
                patient_states.c.patient_id.in_(chunk)
            )
        ).all()
        settings = self._session.execute(
            select(alert_settings.c.patient_id, alert_settings.c.settings_json).where(
                alert_settings.c.patient_id.in_(chunk)
            )
        ).all()
        open_alerts = [
            dict(row._mapping)
            for row in self._session.execute(
                select(alerts).where(alerts.c.patient_id.in_(chunk), alerts.c.open_key.is_not(None))
            )
        ]
        return states, settings, open_alerts

    def alert_written(self, values: dict[str, Any]) -> None:
        patient = values["patient_id"]
        if patient not in self.open_rows:
            return
        if values["open_key"] is None:
            self.open_rows[patient].pop(values["alert_id"], None)
        else:
            self.open_rows[patient][values["alert_id"]] = values

    def _before_commit(self, _session: Session) -> None:
        self.flush()

    def _after_commit(self, _session: Session) -> None:
        if self._cache is not None and self._written:
            self._cache.put(self._written)
        self._written = {}

    def flush(self) -> None:
        if not self.dirty:
            return
        updates: list[dict[str, object]] = []
        inserts: list[dict[str, object]] = []
        for patient, (state, at_us) in self.dirty.items():
            text = json.dumps(state.to_json())
            if self._cache is not None:
                self._written[patient] = (text, state)
            if patient in self.existing:
                updates.append({"b_patient": patient, "b_json": text, "b_at": at_us})
            else:
                inserts.append({"patient_id": patient, "state_json": text, "updated_at_us": at_us})
                self.existing.add(patient)
        self.dirty = {}
        raw = sqlite_driver(self._session)
        if raw is not None:
            # Straight to the driver (plain strings and integers).
            try:
                if updates:
                    raw.executemany(
                        _SQLITE_UPDATE_STATE,
                        [(u["b_json"], u["b_at"], u["b_patient"]) for u in updates],
                    )
                if inserts:
                    raw.executemany(
                        _SQLITE_INSERT_STATE,
                        [(i["patient_id"], i["state_json"], i["updated_at_us"]) for i in inserts],
                    )
            except sqlite3.IntegrityError as exc:
                raise IntegrityError(_SQLITE_INSERT_STATE, None, exc) from exc
            return
        if updates:
            self._session.execute(_update_state, updates)
        if inserts:
            self._session.execute(_insert_state, inserts)


class AlertRepository:
    """Alerts, deliveries, person state, settings and plans in the caller's session."""

    def __init__(self, session: Session, default_plan: EscalationPlan | None = None) -> None:
        self._session = session
        self._default_plan = default_plan

    # -- person state
    def load_state(self, patient_id: str) -> PatientState | None:
        view = BatchView.of(self._session)
        if view is not None:
            view.load({patient_id})
            return view.states[patient_id]
        text = self._session.execute(_select_state, {"b_patient": patient_id}).scalar_one_or_none()
        return PatientState.from_json(json.loads(text)) if text else None

    def save_state(self, state: PatientState, now: datetime) -> None:
        view = BatchView.of(self._session)
        if view is not None:
            view.load({state.patient_id})
            view.states[state.patient_id] = state
            view.dirty[state.patient_id] = (state, round(now.timestamp() * 1_000_000))
            return
        text, at = json.dumps(state.to_json()), _us(now)
        result = self._session.execute(
            _update_state, {"b_patient": state.patient_id, "b_json": text, "b_at": at}
        )
        if not getattr(result, "rowcount", 0):
            self._session.execute(
                _insert_state,
                {"patient_id": state.patient_id, "state_json": text, "updated_at_us": at},
            )

    def patient_ids(self) -> list[str]:
        view = BatchView.of(self._session)
        if view is not None:
            view.flush()
        return list(self._session.execute(select(patient_states.c.patient_id)).scalars())

    # -- settings and plans
    def settings(self, patient_id: str) -> AlertSettings:
        view = BatchView.of(self._session)
        if view is not None:
            view.load({patient_id})
            return view.settings[patient_id]
        text = self._session.execute(
            _select_settings, {"b_patient": patient_id}
        ).scalar_one_or_none()
        return AlertSettings.from_json(json.loads(text)) if text else AlertSettings()

    def settings_version(self, patient_id: str) -> int:
        value = self._session.execute(
            select(alert_settings.c.version).where(alert_settings.c.patient_id == patient_id)
        ).scalar_one_or_none()
        return int(value or 0)

    def put_settings(self, patient_id: str, settings: AlertSettings) -> int:
        version = self.settings_version(patient_id) + 1
        text = json.dumps(settings.to_json())
        if version == 1:
            self._session.execute(
                alert_settings.insert().values(patient_id=patient_id, version=1, settings_json=text)
            )
        else:
            self._session.execute(
                update(alert_settings)
                .where(alert_settings.c.patient_id == patient_id)
                .values(version=version, settings_json=text)
            )
        view = BatchView.of(self._session)
        if view is not None:
            view.load({patient_id})
            view.settings[patient_id] = AlertSettings.from_json(json.loads(text))
        return version

    def plan(self, patient_id: str) -> EscalationPlan:
        text = self._session.execute(_select_plan, {"b_patient": patient_id}).scalar_one_or_none()
        if text:
            return plan_from_json(text)
        if self._default_plan is not None:
            return self._default_plan
        return EscalationPlan((Recipient(patient_id, Tier.PERSON, Channel.PUSH),))

    def plan_version(self, patient_id: str) -> int:
        value = self._session.execute(
            select(escalation_plans.c.version).where(escalation_plans.c.patient_id == patient_id)
        ).scalar_one_or_none()
        return int(value or 0)

    def put_plan(self, patient_id: str, plan: EscalationPlan) -> int:
        version = self.plan_version(patient_id) + 1
        text = plan_to_json(plan)
        if version == 1:
            self._session.execute(
                escalation_plans.insert().values(patient_id=patient_id, version=1, plan_json=text)
            )
        else:
            self._session.execute(
                update(escalation_plans)
                .where(escalation_plans.c.patient_id == patient_id)
                .values(version=version, plan_json=text)
            )
        return version

    # -- alerts
    def open_alerts(self, patient_id: str) -> dict[AlertKind, Alert]:
        view = BatchView.of(self._session)
        if view is not None:
            view.load({patient_id})
            # Fresh objects every time, as from the table (callers change them in place).
            found = [_alert_from(v) for v in view.open_rows[patient_id].values()]
            found.sort(key=lambda a: a.raised_at)
            return {a.kind: a for a in found}
        rows = self._session.execute(_select_open, {"b_patient": patient_id})
        found = [_alert(r) for r in rows]
        return {a.kind: a for a in found}

    def open_counts_by_state(self) -> dict[AlertState, int]:
        """Open (unresolved) alerts per lifecycle state; every open state present, 0 if none."""
        rows = self._session.execute(
            select(alerts.c.state, func.count())
            .where(alerts.c.open_key.is_not(None))
            .group_by(alerts.c.state)
        )
        counts: dict[AlertState, int] = {
            state: 0 for state in AlertState if state is not AlertState.RESOLVED
        }
        for state, count in rows:
            counts[AlertState(state)] = int(count)
        return counts

    def get_alert(self, alert_id: str) -> Alert | None:
        row = self._session.execute(select(alerts).where(alerts.c.alert_id == alert_id)).first()
        return _alert(row) if row else None

    def add_alert(self, alert: Alert) -> None:
        values = _alert_values(alert)
        self._session.execute(_insert_alert, [values])
        view = BatchView.of(self._session)
        if view is not None:
            view.alert_written(values)

    def save_alert(self, alert: Alert) -> None:
        values = _alert_values(alert)
        self._session.execute(_update_alert, [{f"b_{k}": v for k, v in values.items()}])
        view = BatchView.of(self._session)
        if view is not None:
            view.alert_written(values)

    def due_alerts(self, now: datetime, limit: int) -> list[Alert]:
        rows = self._session.execute(
            select(alerts)
            .where(alerts.c.next_due_us <= _us(now))
            .order_by(alerts.c.next_due_us)
            .limit(limit)
        )
        return [_alert(r) for r in rows]

    def list_alerts(
        self,
        patient_id: str,
        *,
        states: list[AlertState],
        start: datetime | None,
        end: datetime | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[Alert]:
        conditions = [alerts.c.patient_id == patient_id]
        if states:
            conditions.append(alerts.c.state.in_([s.value for s in states]))
        if start is not None:
            conditions.append(alerts.c.raised_at_us >= _us(start))
        if end is not None:
            conditions.append(alerts.c.raised_at_us < _us(end))
        if after is not None:
            conditions.append(
                or_(
                    alerts.c.raised_at_us < after[0],
                    (alerts.c.raised_at_us == after[0]) & (alerts.c.alert_id < after[1]),
                )
            )
        rows = self._session.execute(
            select(alerts)
            .where(*conditions)
            .order_by(alerts.c.raised_at_us.desc(), alerts.c.alert_id.desc())
            .limit(limit)
        )
        return [_alert(r) for r in rows]

    # -- deliveries
    def add_delivery(self, delivery: Delivery) -> bool:
        """Record the intent; False when this key was already recorded (nothing changes)."""
        exists = self._session.execute(
            _select_delivery_key, {"b_key": delivery.delivery_key}
        ).first()
        if exists:
            return False
        self._session.execute(
            _insert_delivery,
            {
                "delivery_id": delivery.delivery_id,
                "delivery_key": delivery.delivery_key,
                "alert_id": delivery.alert_id,
                "patient_id": delivery.patient_id,
                "recipient_id": delivery.recipient_id,
                "channel": delivery.channel.value,
                "address": delivery.address,
                "tier": int(delivery.tier),
                "notification_no": delivery.notification_no,
                "status": delivery.status.value,
                "attempts": delivery.attempts,
                "next_attempt_at_us": _us(delivery.next_attempt_at),
                "created_at_us": _us(delivery.created_at),
                "sent_at_us": _us(delivery.sent_at),
                "last_error": delivery.last_error[:500],
                "subject": delivery.subject[:200],
                "body": delivery.body,
                "kind": delivery.kind.value,
                "severity": delivery.severity.value,
            },
        )
        return True

    def save_delivery(self, delivery: Delivery) -> None:
        self._session.execute(
            update(deliveries)
            .where(deliveries.c.delivery_id == delivery.delivery_id)
            .values(
                status=delivery.status.value,
                attempts=delivery.attempts,
                next_attempt_at_us=_us(delivery.next_attempt_at),
                sent_at_us=_us(delivery.sent_at),
                last_error=delivery.last_error[:500],
            )
        )

    def due_deliveries(self, now: datetime, limit: int) -> list[Delivery]:
        rows = self._session.execute(
            select(deliveries)
            .where(
                deliveries.c.status.in_(
                    [DeliveryStatus.PENDING.value, DeliveryStatus.FAILED.value]
                ),
                deliveries.c.next_attempt_at_us <= _us(now),
            )
            .order_by(deliveries.c.next_attempt_at_us)
            .limit(limit)
        )
        return [_delivery(r) for r in rows]

    def get_delivery(self, delivery_id: str) -> Delivery | None:
        row = self._session.execute(
            select(deliveries).where(deliveries.c.delivery_id == delivery_id)
        ).first()
        return _delivery(row) if row else None

    def deliveries_of(self, alert_id: str) -> list[Delivery]:
        rows = self._session.execute(
            select(deliveries)
            .where(deliveries.c.alert_id == alert_id)
            .order_by(deliveries.c.created_at_us)
        )
        return [_delivery(r) for r in rows]
