"""alerts on Kafka: what it consumes, what it announces (through the outbox).

Consumes validated readings, dosing decisions, pump events and device telemetry; announces
alert state changes on alerts.v1 and deliveries (the live push among them) on
alerts.deliveries.v1, whose consumer is the gateway's live stream.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from langerhans.alerts.v1 import alerts_pb2
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import therapy_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_pb2
from langerhans.pump.v1 import pump_pb2
from sqlalchemy.orm import Session

from services.alerts.lifecycle import Alert, AlertState
from services.alerts.model import AlertKind, Severity
from services.alerts.repository import AlertRepository, BatchView, StateCache
from services.alerts.service import AlertsService, Channel, Delivery, DeliveryStatus, EscalationPlan
from services.runtime import outbox
from services.runtime.clock import Clock
from services.runtime.kafka.envelope import (
    Envelope,
    MalformedEventError,
    ProtoMessage,
)

__all__ = [
    "ALERTS_TOPIC",
    "DELIVERIES_TOPIC",
    "INPUT_TOPICS",
    "SOURCE",
    "AlertTopics",
    "AlertsHandler",
    "OutboxAlertEvents",
    "alert_to_proto",
    "handle",
    "make_handler",
]

SOURCE = "langerhans/alerts"
ALERTS_TOPIC = "alerts.v1"
DELIVERIES_TOPIC = "alerts.deliveries.v1"
INPUT_TOPICS = (
    "cgm.readings.v1",
    "dosing.decisions.v1",
    "pump.events.v1",
    "device.telemetry.v1",
    "therapy.settings.v1",
)
_NO_ISF = therapy_pb2.SensitivitySegment()
_NO_CR = therapy_pb2.CarbRatioSegment()
_NO_BASAL = therapy_pb2.BasalSegment()
_EVENT_NAMESPACE = uuid.UUID("9a4f1d2b-7c3e-4e8a-b5d6-1f2e3a4b5c6d")

TYPES = {
    AlertKind.URGENT_LOW: alerts_pb2.ALERT_TYPE_URGENT_LOW,
    AlertKind.LOW: alerts_pb2.ALERT_TYPE_LOW,
    AlertKind.HIGH: alerts_pb2.ALERT_TYPE_HIGH,
    AlertKind.URGENT_LOW_SOON: alerts_pb2.ALERT_TYPE_URGENT_LOW_SOON,
    AlertKind.RAPID_FALL: alerts_pb2.ALERT_TYPE_RAPID_FALL,
    AlertKind.RAPID_RISE: alerts_pb2.ALERT_TYPE_RAPID_RISE,
    AlertKind.NO_CGM_DATA: alerts_pb2.ALERT_TYPE_NO_CGM_DATA,
    AlertKind.NOT_LOOPING: alerts_pb2.ALERT_TYPE_NOT_LOOPING,
    AlertKind.OCCLUSION: alerts_pb2.ALERT_TYPE_PUMP_OCCLUSION,
    AlertKind.RESERVOIR_LOW: alerts_pb2.ALERT_TYPE_RESERVOIR_LOW,
    AlertKind.RESERVOIR_VERY_LOW: alerts_pb2.ALERT_TYPE_RESERVOIR_CRITICAL,
    AlertKind.BATTERY_LOW: alerts_pb2.ALERT_TYPE_BATTERY_LOW,
    AlertKind.BATTERY_VERY_LOW: alerts_pb2.ALERT_TYPE_BATTERY_CRITICAL,
    AlertKind.SUSPENDED_TOO_LONG: alerts_pb2.ALERT_TYPE_PUMP_SUSPENDED_TOO_LONG,
    AlertKind.DELIVERY_UNCERTAIN: alerts_pb2.ALERT_TYPE_DELIVERY_UNCERTAIN,
    AlertKind.INFUSION_SET_FAILURE: alerts_pb2.ALERT_TYPE_INFUSION_SET_FAILURE_SUSPECTED,
}
SEVERITIES = {
    Severity.INFO: alerts_pb2.ALERT_SEVERITY_INFO,
    Severity.WARNING: alerts_pb2.ALERT_SEVERITY_WARNING,
    Severity.URGENT: alerts_pb2.ALERT_SEVERITY_URGENT,
}
STATES = {
    AlertState.RAISED: alerts_pb2.ALERT_STATE_RAISED,
    AlertState.NOTIFIED: alerts_pb2.ALERT_STATE_NOTIFIED,
    AlertState.ACKNOWLEDGED: alerts_pb2.ALERT_STATE_ACKNOWLEDGED,
    AlertState.SNOOZED: alerts_pb2.ALERT_STATE_SNOOZED,
    AlertState.RESOLVED: alerts_pb2.ALERT_STATE_RESOLVED,
}
CHANNELS = {
    Channel.PUSH: alerts_pb2.ALERT_CHANNEL_PUSH,
    Channel.WEBHOOK: alerts_pb2.ALERT_CHANNEL_WEBHOOK,
    Channel.EMAIL: alerts_pb2.ALERT_CHANNEL_EMAIL,
}
DELIVERY_STATUSES = {
    DeliveryStatus.PENDING: alerts_pb2.DELIVERY_STATUS_PENDING,
    DeliveryStatus.DELIVERED: alerts_pb2.DELIVERY_STATUS_DELIVERED,
    DeliveryStatus.FAILED: alerts_pb2.DELIVERY_STATUS_FAILED,
    DeliveryStatus.GAVE_UP: alerts_pb2.DELIVERY_STATUS_GAVE_UP,
}


def _ts(target: object, value: datetime | None) -> None:
    if value is not None:
        target.FromDatetime(value)  # type: ignore[attr-defined]


def alert_to_proto(alert: Alert) -> alerts_pb2.Alert:
    message = alerts_pb2.Alert(
        alert_id=alert.alert_id,
        patient_id=alert.patient_id,
        type=TYPES[alert.kind],
        severity=SEVERITIES[alert.severity],
        state=STATES[alert.state],
        dedupe_key=f"{alert.patient_id}|{alert.kind.value}",
        title=alert.kind.value.replace("_", " ").capitalize(),
        message=alert.message,
        acknowledged_by=alert.acknowledged_by,
        escalation_tier=int(alert.tier) + 1,  # type: ignore[arg-type]
        notification_count=alert.notification_count,
    )
    if alert.value is not None and alert.kind in (
        AlertKind.URGENT_LOW,
        AlertKind.LOW,
        AlertKind.HIGH,
        AlertKind.URGENT_LOW_SOON,
        AlertKind.INFUSION_SET_FAILURE,
    ):
        message.glucose_mg_dl = alert.value
    _ts(message.raised_at, alert.raised_at)
    _ts(message.updated_at, alert.updated_at)
    _ts(message.acknowledged_at, alert.acknowledged_at)
    _ts(message.snoozed_until, alert.snoozed_until)
    _ts(message.resolved_at, alert.resolved_at)
    _ts(message.next_escalation_at, alert.next_escalation_at)
    return message


def delivery_to_proto(delivery: Delivery) -> alerts_pb2.AlertDelivery:
    message = alerts_pb2.AlertDelivery(
        delivery_id=delivery.delivery_id,
        alert_id=delivery.alert_id,
        patient_id=delivery.patient_id,
        channel=CHANNELS[delivery.channel],
        recipient_id=delivery.recipient_id,
        address=delivery.address,
        tier=int(delivery.tier) + 1,  # type: ignore[arg-type]
        attempt=delivery.attempts,
        status=DELIVERY_STATUSES[delivery.status],
        error=delivery.last_error,
    )
    _ts(message.attempted_at, delivery.sent_at or delivery.created_at)
    _ts(message.next_attempt_at, delivery.next_attempt_at)
    return message


@dataclass(frozen=True)
class AlertTopics:
    alerts: str = ALERTS_TOPIC
    deliveries: str = DELIVERIES_TOPIC


class OutboxAlertEvents:
    """AlertEvents written into the outbox of the caller's transaction."""

    def __init__(self, session: Session, clock: Clock, topics: AlertTopics) -> None:
        self._session = session
        self._clock = clock
        self._topics = topics

    def alert_changed(self, alert: Alert, previous: AlertState | None, reason: str) -> None:
        message = alerts_pb2.AlertStateChanged(
            alert=alert_to_proto(alert),
            previous_state=STATES[previous] if previous else alerts_pb2.ALERT_STATE_UNSPECIFIED,
            reason=reason,
            changed_by=alert.acknowledged_by if previous and "by" in reason else "alerts",
        )
        message.changed_at.FromDatetime(self._clock.now())
        self._add(self._topics.alerts, alert.patient_id, message, None)

    def delivery_recorded(self, delivery: Delivery) -> None:
        key = f"{delivery.delivery_id}|{delivery.status.value}|{delivery.attempts}"
        # The same attempt outcome always carries the same event id (consumers dedupe).
        event_id = str(uuid.uuid5(_EVENT_NAMESPACE, key))
        self._add(
            self._topics.deliveries, delivery.patient_id, delivery_to_proto(delivery), event_id
        )

    def _add(self, topic: str, key: str, message: ProtoMessage, event_id: str | None) -> None:
        outbox.add(
            self._session, topic, key, message, source=SOURCE, clock=self._clock, event_id=event_id
        )


def _dt(ts: object) -> datetime:
    return ts.ToDatetime(UTC)  # type: ignore[attr-defined,no-any-return]


def _on_pump_event(service: AlertsService, event: pump_pb2.PumpEvent) -> None:
    patient = event.patient_id
    at = _dt(event.occurred_at)
    which = event.WhichOneof("event")
    if which == "bolus_delivered":
        bolus = event.bolus_delivered
        if bolus.delivered_insulin_u > 0:
            service.on_insulin(patient, at, bolus.delivered_insulin_u, bolus.automatic)
    elif which == "bolus_cancelled" and event.bolus_cancelled.delivered_insulin_u > 0:
        cancelled = event.bolus_cancelled
        service.on_insulin(patient, at, cancelled.delivered_insulin_u, cancelled.automatic)
    elif which == "temp_basal_started":
        service.reevaluate(patient)
    elif which == "temp_basal_ended":
        ended = event.temp_basal_ended
        service.on_basal_delivered(
            patient, at, ended.delivered_insulin_u, float(ended.actual_duration_min)
        )
    elif which == "delivery_suspended":
        service.on_pump_status(patient, suspended=True, at=at)
    elif which == "delivery_resumed":
        service.on_pump_status(patient, suspended=False, at=at)
        service.on_occlusion(patient, at, active=False)
    elif which == "occlusion_detected":
        service.on_occlusion(patient, at, active=True)
    elif which == "reservoir_low":
        service.on_pump_status(patient, reservoir_u=event.reservoir_low.reservoir_u)
    elif which == "battery_low":
        service.on_pump_status(patient, battery_pct=event.battery_low.battery_pct)
    elif which == "infusion_set_changed":
        changed = event.infusion_set_changed
        service.on_set_changed(patient, at, changed.reservoir_u or None)
    elif which == "carbs_entered":
        carbs = event.carbs_entered
        service.on_carbs(patient, at, carbs.carbs_g, float(carbs.absorption_min))
    elif which == "history_reconciled":
        result = event.history_reconciled.result
        uncertain = result not in (pump_pb2.RECONCILIATION_RESULT_CONFIRMED,)
        service.on_delivery_uncertain(patient, at, uncertain=uncertain)


def _on_telemetry(service: AlertsService, telemetry: device_pb2.DeviceTelemetry) -> None:
    patient = telemetry.patient_id
    at = _dt(telemetry.recorded_at)
    which = telemetry.WhichOneof("payload")
    if which == "pump_status":
        status = telemetry.pump_status
        service.on_pump_status(
            patient,
            reservoir_u=status.reservoir_u,
            battery_pct=status.battery_pct,
            suspended=status.suspended,
            scheduled_basal_u_per_h=status.scheduled_basal_rate_u_per_h,
            at=at,
        )
    elif which == "heartbeat":
        beat = telemetry.heartbeat
        service.on_delivery_uncertain(patient, at, uncertain=bool(beat.uncertain_command_ids))
    elif which == "pump_history_event":
        _on_pump_event(service, telemetry.pump_history_event)
    elif which == "command_outcome":
        outcome = telemetry.command_outcome
        if outcome.state == device_pb2.PUMP_COMMAND_STATE_UNCERTAIN:
            service.on_delivery_uncertain(patient, at, uncertain=True)


_READING_TYPE = cgm_pb2.CgmReading.DESCRIPTOR.full_name


class AlertsHandler:
    """The consumer handler: one event, one unit of work in the runner's transaction.

    Between `begin_batch(envelopes)` and `end_batch()` (a poll batch in one transaction) the
    people of the batch are loaded together and their states written together (`BatchView`),
    and each reading is parsed once.
    """

    def __init__(
        self, clock: Clock, topics: AlertTopics, default_plan: EscalationPlan | None = None
    ) -> None:
        self._clock = clock
        self._topics = topics
        self._plan = default_plan
        self._batch: list[Envelope] | None = None
        self._readings: dict[str, cgm_pb2.CgmReading] = {}
        # Person states this consumer committed, reused while the stored text is unchanged.
        self.states = StateCache()

    def begin_batch(self, envelopes: list[Envelope]) -> None:
        self._batch = envelopes
        self._readings = {}

    def end_batch(self) -> None:
        self._batch = None
        self._readings = {}

    def _reading(self, envelope: Envelope) -> cgm_pb2.CgmReading:
        reading = self._readings.get(envelope.event_id)
        return reading if reading is not None else envelope.parse(cgm_pb2.CgmReading)

    def _start_view(self, session: Session) -> None:
        assert self._batch is not None
        patients: set[str] = set()
        for envelope in self._batch:
            if envelope.event_type == _READING_TYPE:
                try:
                    reading = envelope.parse(cgm_pb2.CgmReading)
                except MalformedEventError:
                    continue
                self._readings[envelope.event_id] = reading
                patients.add(reading.patient_id)
        BatchView.start(session, patients, self.states)

    def __call__(self, envelope: Envelope, session: Session) -> None:
        if self._batch is not None and BatchView.of(session) is None:
            self._start_view(session)
            # The batch's outgoing events become one multi-row insert at its commit (same
            # transaction; nothing in alerts reads the outbox table back).
            outbox.batch_inserts(session)
        handle(
            envelope,
            session,
            self._clock,
            self._topics,
            default_plan=self._plan,
            parse_reading=self._reading,
        )


def handle(
    envelope: Envelope,
    session: Session,
    clock: Clock,
    topics: AlertTopics,
    *,
    default_plan: EscalationPlan | None = None,
    parse_reading: Callable[[Envelope], cgm_pb2.CgmReading] | None = None,
) -> None:
    """One event in the caller's transaction."""
    service = AlertsService(
        AlertRepository(session, default_plan), OutboxAlertEvents(session, clock, topics), clock
    )
    kind = envelope.event_type
    if kind == _READING_TYPE:
        if parse_reading is not None:
            reading = parse_reading(envelope)
        else:
            reading = envelope.parse(cgm_pb2.CgmReading)
        rate = reading.rate_mg_dl_per_min if reading.HasField("rate_mg_dl_per_min") else None
        service.on_reading(
            reading.patient_id, _dt(reading.measured_at), reading.glucose_mg_dl, rate
        )
    elif kind == dosing_pb2.DosingDecision.DESCRIPTOR.full_name:
        decision = envelope.parse(dosing_pb2.DosingDecision)
        forecast: list[tuple[float, float]] = []
        start = None
        if decision.forecast.lines:
            line = decision.forecast.lines[0]
            start = _dt(line.start_time)
            step = line.interval_min or 5
            forecast = [(i * step, g) for i, g in enumerate(line.glucose_mg_dl)]
        service.on_decision(
            decision.patient_id, _dt(decision.decided_at), decision.iob_u, forecast, start
        )
    elif kind == pump_pb2.PumpEvent.DESCRIPTOR.full_name:
        _on_pump_event(service, envelope.parse(pump_pb2.PumpEvent))
    elif kind == device_pb2.DeviceTelemetry.DESCRIPTOR.full_name:
        _on_telemetry(service, envelope.parse(device_pb2.DeviceTelemetry))
    elif kind == therapy_pb2.TherapySettingsChanged.DESCRIPTOR.full_name:
        therapy = envelope.parse(therapy_pb2.TherapySettingsChanged).settings
        # The first segment of each schedule: enough for the infusion-set model's scale.
        service.on_therapy_settings(
            therapy.patient_id,
            isf_mg_dl_per_u=(therapy.sensitivity_schedule or [_NO_ISF])[0].isf_mg_dl_per_u,
            carb_ratio_g_per_u=(therapy.carb_ratio_schedule or [_NO_CR])[0].carb_ratio_g_per_u,
            scheduled_basal_u_per_h=(therapy.basal_schedule or [_NO_BASAL])[0].rate_u_per_h,
            time_zone=therapy.time_zone,
        )
    else:
        raise MalformedEventError(f"alerts does not handle {kind!r}")


def make_handler(
    clock: Clock, topics: AlertTopics, default_plan: EscalationPlan | None = None
) -> AlertsHandler:
    return AlertsHandler(clock, topics, default_plan)
