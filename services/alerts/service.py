"""alerts decisions: observations in, alerts raised/resolved, rounds turned into deliveries.

Every public method is one unit of work inside the caller's transaction: it loads the
person's state through the store, changes it, evaluates the rules, records alerts and
delivery intents, and tells the event sink what to announce. It never commits.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from services.alerts.lifecycle import (
    Alert,
    AlertState,
    Round,
    Tier,
    acknowledge,
    due_rounds,
    mark_notified,
    new_alert,
    resolve,
    snooze,
)
from services.alerts.model import (
    AlertKind,
    AlertSettings,
    CarbEntry,
    GlucosePoint,
    InsulinDose,
    PatientState,
    Severity,
    severity_of,
)
from services.alerts.rules import evaluate
from services.runtime.clock import Clock
from services.runtime.errors import FailedPrecondition, NotFound

__all__ = [
    "AlertEvents",
    "AlertStore",
    "AlertsService",
    "Channel",
    "Delivery",
    "DeliveryStatus",
    "EscalationPlan",
    "Recipient",
    "delivery_key",
]

_DELIVERY_NAMESPACE = uuid.UUID("0c8e5a8e-2f4b-4a59-9b0e-6d7f1f3c2a77")
# A bolus with carbs announced this close before it covers the meal, not a correction.
MEAL_BOLUS_WINDOW = timedelta(minutes=20)
MAX_DELIVERY_ATTEMPTS = 8


class Channel(enum.StrEnum):
    PUSH = "push"
    WEBHOOK = "webhook"
    EMAIL = "email"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    GAVE_UP = "gave_up"


@dataclass(frozen=True)
class Recipient:
    recipient_id: str
    tier: Tier
    channel: Channel
    address: str = ""


@dataclass(frozen=True)
class EscalationPlan:
    """Who is told at which tier, and after how many minutes each tier joins (urgent alerts)."""

    recipients: tuple[Recipient, ...]
    tier_delays_min: tuple[float, ...] = (0.0, 5.0, 10.0, 20.0)
    min_escalation_severity: Severity = Severity.URGENT

    def delays_for(self, severity: Severity) -> tuple[float, ...]:
        order = (Severity.INFO, Severity.WARNING, Severity.URGENT)
        if order.index(severity) >= order.index(self.min_escalation_severity):
            return self.tier_delays_min
        return self.tier_delays_min[:1]


@dataclass
class Delivery:
    """One notification of one alert to one recipient on one channel (unique by key)."""

    delivery_id: str
    delivery_key: str
    alert_id: str
    patient_id: str
    recipient_id: str
    channel: Channel
    address: str
    tier: Tier
    notification_no: int
    status: DeliveryStatus
    attempts: int
    next_attempt_at: datetime | None
    created_at: datetime
    subject: str
    body: str
    kind: AlertKind
    severity: Severity
    sent_at: datetime | None = None
    last_error: str = ""


def delivery_key(alert_id: str, recipient: Recipient, tier: Tier, notification_no: int) -> str:
    return f"{alert_id}:{recipient.recipient_id}:{recipient.channel}:{int(tier)}:{notification_no}"


class AlertStore(Protocol):
    def load_state(self, patient_id: str) -> PatientState | None: ...
    def save_state(self, state: PatientState, now: datetime) -> None: ...
    def settings(self, patient_id: str) -> AlertSettings: ...
    def put_settings(self, patient_id: str, settings: AlertSettings) -> int: ...
    def plan(self, patient_id: str) -> EscalationPlan: ...
    def open_alerts(self, patient_id: str) -> dict[AlertKind, Alert]: ...
    def get_alert(self, alert_id: str) -> Alert | None: ...
    def add_alert(self, alert: Alert) -> None: ...
    def save_alert(self, alert: Alert) -> None: ...
    def due_alerts(self, now: datetime, limit: int) -> list[Alert]: ...
    def patient_ids(self) -> list[str]: ...
    def add_delivery(self, delivery: Delivery) -> bool: ...
    def save_delivery(self, delivery: Delivery) -> None: ...


class AlertEvents(Protocol):
    """Announcements (implemented with the outbox)."""

    def alert_changed(self, alert: Alert, previous: AlertState | None, reason: str) -> None: ...
    def delivery_recorded(self, delivery: Delivery) -> None: ...


@dataclass
class _Work:
    """What one unit of work changed (returned for tests and metrics)."""

    raised: list[Alert] = field(default_factory=list)
    resolved: list[Alert] = field(default_factory=list)
    deliveries: list[Delivery] = field(default_factory=list)


class AlertsService:
    def __init__(self, store: AlertStore, events: AlertEvents, clock: Clock) -> None:
        self._store = store
        self._events = events
        self._clock = clock

    # ------------------------------------------------------------------ observations
    def _update(self, patient_id: str, change: Callable[[PatientState], None]) -> _Work:
        now = self._clock.now()
        state = self._store.load_state(patient_id) or PatientState(patient_id, first_seen=now)
        change(state)
        state.prune(now)
        work = self._evaluate(state, now)
        self._store.save_state(state, now)
        return work

    def on_reading(
        self, patient_id: str, at: datetime, glucose_mg_dl: float, rate: float | None
    ) -> _Work:
        def change(state: PatientState) -> None:
            state.add_glucose(GlucosePoint(at, glucose_mg_dl, rate))

        return self._update(patient_id, change)

    def on_decision(
        self,
        patient_id: str,
        decided_at: datetime,
        iob_u: float,
        forecast: Sequence[tuple[float, float]],
        forecast_start: datetime | None = None,
    ) -> _Work:
        def change(state: PatientState) -> None:
            state.last_loop_time = max(decided_at, state.last_loop_time or decided_at)
            state.iob_u, state.iob_time = iob_u, decided_at
            state.forecast = list(forecast)
            state.forecast_time = forecast_start or decided_at

        return self._update(patient_id, change)

    def on_insulin(self, patient_id: str, at: datetime, insulin_u: float, automatic: bool) -> _Work:
        """A delivered bolus (manual or automatic micro-bolus)."""

        def change(state: PatientState) -> None:
            meal = (
                any(timedelta(0) <= at - c.time <= MEAL_BOLUS_WINDOW for c in state.carbs)
                and not automatic
            )
            state.doses.append(InsulinDose(at, insulin_u, correction=not meal))
            state.doses.sort(key=lambda d: d.time)

        return self._update(patient_id, change)

    def on_basal_delivered(
        self, patient_id: str, at: datetime, insulin_u: float, duration_min: float
    ) -> _Work:
        """A finished temp basal: the part above the scheduled basal is a correction."""

        def change(state: PatientState) -> None:
            if state.scheduled_basal_u_per_h <= 0:
                return  # schedule unknown: do not guess what was extra
            extra = insulin_u - state.scheduled_basal_u_per_h * duration_min / 60.0
            if extra > 0.05:
                # Spread over the temp's duration, counted at its middle.
                middle = at - timedelta(minutes=duration_min / 2)
                state.doses.append(InsulinDose(middle, extra, correction=True))
                state.doses.sort(key=lambda d: d.time)

        return self._update(patient_id, change)

    def on_carbs(
        self, patient_id: str, at: datetime, carbs_g: float, absorption_min: float
    ) -> _Work:
        def change(state: PatientState) -> None:
            state.carbs.append(CarbEntry(at, carbs_g, absorption_min or 180.0))
            # A manual bolus just before the carbs were entered was for the meal.
            state.doses = [
                InsulinDose(d.time, d.insulin_u, False)
                if timedelta(0) <= at - d.time <= MEAL_BOLUS_WINDOW and d.correction
                else d
                for d in state.doses
            ]

        return self._update(patient_id, change)

    def on_pump_status(
        self,
        patient_id: str,
        *,
        reservoir_u: float | None = None,
        battery_pct: float | None = None,
        suspended: bool | None = None,
        scheduled_basal_u_per_h: float | None = None,
        at: datetime | None = None,
    ) -> _Work:
        def change(state: PatientState) -> None:
            if scheduled_basal_u_per_h:
                state.scheduled_basal_u_per_h = scheduled_basal_u_per_h
            if reservoir_u is not None:
                state.reservoir_u = reservoir_u
            if battery_pct is not None:
                state.battery_pct = battery_pct
            if suspended is True and state.suspended_since is None:
                state.suspended_since = at or self._clock.now()
            elif suspended is False:
                state.suspended_since = None

        return self._update(patient_id, change)

    def on_occlusion(self, patient_id: str, at: datetime, active: bool) -> _Work:
        def change(state: PatientState) -> None:
            state.occlusion_since = (state.occlusion_since or at) if active else None

        return self._update(patient_id, change)

    def on_set_changed(self, patient_id: str, at: datetime, reservoir_u: float | None) -> _Work:
        def change(state: PatientState) -> None:
            state.set_changed_at = at
            state.occlusion_since = None
            if reservoir_u:
                state.reservoir_u = reservoir_u

        return self._update(patient_id, change)

    def on_therapy_settings(
        self,
        patient_id: str,
        *,
        isf_mg_dl_per_u: float,
        carb_ratio_g_per_u: float,
        scheduled_basal_u_per_h: float,
        time_zone: str,
    ) -> None:
        """The person's therapy settings: the infusion-set model and the night schedule."""
        settings = self._store.settings(patient_id)
        if isf_mg_dl_per_u > 0:
            settings.isf_mg_dl_per_u = isf_mg_dl_per_u
        if carb_ratio_g_per_u > 0:
            settings.carb_ratio_g_per_u = carb_ratio_g_per_u
        if time_zone:
            settings.time_zone = time_zone
        self._store.put_settings(patient_id, settings)
        if scheduled_basal_u_per_h > 0:
            self.on_pump_status(patient_id, scheduled_basal_u_per_h=scheduled_basal_u_per_h)

    def on_delivery_uncertain(self, patient_id: str, at: datetime, uncertain: bool) -> _Work:
        def change(state: PatientState) -> None:
            state.delivery_uncertain_since = (
                (state.delivery_uncertain_since or at) if uncertain else None
            )

        return self._update(patient_id, change)

    # ------------------------------------------------------------------ rules → alerts
    def _evaluate(self, state: PatientState, now: datetime) -> _Work:
        work = _Work()
        settings = self._store.settings(state.patient_id)
        open_alerts = self._store.open_alerts(state.patient_id)
        conditions = evaluate(state, settings, now, open_alerts.keys())
        plan: EscalationPlan | None = None
        for kind, condition in conditions.items():
            alert = open_alerts.get(kind)
            if alert is not None and not condition.active:
                previous = alert.state
                resolve(alert, now)
                self._store.save_alert(alert)
                self._events.alert_changed(alert, previous, "condition cleared")
                work.resolved.append(alert)
            elif alert is None and condition.active:
                plan = plan or self._store.plan(state.patient_id)
                severity = severity_of(kind)
                alert, first = new_alert(
                    str(uuid.uuid4()),
                    patient_id=state.patient_id,
                    kind=kind,
                    severity=severity,
                    message=condition.message,
                    value=condition.value,
                    now=now,
                    delays=plan.delays_for(severity),
                )
                self._store.add_alert(alert)
                self._events.alert_changed(alert, None, "raised")
                work.raised.append(alert)
                work.deliveries += self._notify(alert, first, plan, now)
            elif alert is not None and condition.value is not None:
                alert.value = condition.value
        return work

    def _notify(
        self, alert: Alert, round_: Round, plan: EscalationPlan, now: datetime
    ) -> list[Delivery]:
        recorded: list[Delivery] = []
        for recipient in plan.recipients:
            if recipient.tier not in round_.tiers:
                continue
            key = delivery_key(alert.alert_id, recipient, recipient.tier, round_.number)
            delivery = Delivery(
                delivery_id=str(uuid.uuid5(_DELIVERY_NAMESPACE, key)),
                delivery_key=key,
                alert_id=alert.alert_id,
                patient_id=alert.patient_id,
                recipient_id=recipient.recipient_id,
                channel=recipient.channel,
                address=recipient.address,
                tier=recipient.tier,
                notification_no=round_.number,
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                subject=f"[{alert.severity.value}] {alert.kind.value.replace('_', ' ')}",
                body=f"{alert.message} ({round_.reason})",
                kind=alert.kind,
                severity=alert.severity,
            )
            if recipient.channel is Channel.PUSH:
                # Push is the live stream: handing it to the outbox in this transaction is
                # the delivery (the gateway fans it out to connected apps).
                delivery.status = DeliveryStatus.DELIVERED
                delivery.attempts = 1
                delivery.sent_at = now
                delivery.next_attempt_at = None
            if self._store.add_delivery(delivery):
                recorded.append(delivery)
                if delivery.status is DeliveryStatus.DELIVERED:
                    self._events.delivery_recorded(delivery)
        if any(d.status is DeliveryStatus.DELIVERED for d in recorded):
            previous = alert.state
            mark_notified(alert, now)
            if alert.state is not previous:
                self._events.alert_changed(alert, previous, "notified")
        self._store.save_alert(alert)
        return recorded

    # ------------------------------------------------------------------ timers
    def tick(self, limit: int = 500) -> _Work:
        """Fire due escalations, repeats and snooze ends (the scheduler calls this)."""
        now = self._clock.now()
        work = _Work()
        for alert in self._store.due_alerts(now, limit):
            plan = self._store.plan(alert.patient_id)
            previous = alert.state
            rounds = due_rounds(alert, now, plan.delays_for(alert.severity))
            for round_ in rounds:
                self._events.alert_changed(alert, previous, round_.reason)
                work.deliveries += self._notify(alert, round_, plan, now)
            self._store.save_alert(alert)
        return work

    def reevaluate(self, patient_id: str) -> _Work:
        """Time-based rules (no data, not looping, suspended too long) for one person."""
        return self._update(patient_id, lambda _s: None)

    # ------------------------------------------------------------------ people act
    def acknowledge(self, alert_id: str, by: str) -> Alert:
        alert = self._existing(alert_id)
        previous = alert.state
        acknowledge(alert, by, self._clock.now())
        self._store.save_alert(alert)
        self._events.alert_changed(alert, previous, f"acknowledged by {by}")
        return alert

    def snooze(self, alert_id: str, by: str, duration_min: float) -> tuple[Alert, bool]:
        alert = self._existing(alert_id)
        previous = alert.state
        capped = snooze(alert, by, duration_min, self._clock.now())
        self._store.save_alert(alert)
        self._events.alert_changed(alert, previous, f"snoozed by {by}")
        return alert, capped

    def _existing(self, alert_id: str) -> Alert:
        alert = self._store.get_alert(alert_id)
        if alert is None:
            raise NotFound(f"no alert {alert_id}")
        if alert.state is AlertState.RESOLVED:
            raise FailedPrecondition(f"alert {alert_id} is already resolved")
        return alert
