"""The only module of the device gateway that touches Kafka topics.

Everything is written to the transactional outbox in the caller's transaction (published by
the relay after commit); `CommandConsumer` reads pump.commands.v1 in a thread with a consumer
group of its own per replica, so every replica sees every command.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaConsumer
from langerhans.cgm.v1 import cgm_pb2
from langerhans.device.v1 import device_pb2
from langerhans.pump.v1 import pump_pb2
from sqlalchemy.orm import Session

from services.runtime import outbox
from services.runtime.clock import Clock
from services.runtime.kafka.envelope import MalformedEventError, envelope_from_record

__all__ = [
    "COMMANDS_TOPIC",
    "OUTCOMES_TOPIC",
    "PUMP_EVENTS_TOPIC",
    "RAW_CGM_TOPIC",
    "TELEMETRY_TOPIC",
    "CommandConsumer",
    "publish_command",
    "publish_outcome",
    "publish_telemetry",
]

log = logging.getLogger(__name__)

SOURCE = "device-gateway"
TELEMETRY_TOPIC = "device.telemetry.v1"
RAW_CGM_TOPIC = "cgm.readings.raw.v1"
PUMP_EVENTS_TOPIC = "pump.events.v1"
COMMANDS_TOPIC = "pump.commands.v1"
OUTCOMES_TOPIC = "pump.command_outcomes.v1"


def publish_telemetry(session: Session, item: device_pb2.DeviceTelemetry, clock: Clock) -> None:
    """The telemetry item, plus its CGM reading or pump history event on their own topics."""
    key = item.patient_id
    event_id = f"{item.device_id}:{item.hub_sequence}"
    outbox.add(session, TELEMETRY_TOPIC, key, item, source=SOURCE, clock=clock, event_id=event_id)
    kind = item.WhichOneof("payload")
    if kind == "cgm_reading":
        reading = item.cgm_reading
        raw = cgm_pb2.RawCgmReading(
            patient_id=item.patient_id,
            device_id=item.device_id,
            sensor_id=reading.sensor_id,
            glucose=reading.glucose,
            source=cgm_pb2.ReadingSource.READING_SOURCE_HUB,
            backfill=reading.backfill,
            device_trend=reading.sensor_trend,
            sensor_age_min=reading.time_offset_min,
            device_status_flags=reading.sensor_status_flags,
            source_record_id=event_id,
        )
        raw.measured_at.CopyFrom(reading.measured_at)
        raw.received_at.CopyFrom(item.received_at)
        outbox.add(
            session, RAW_CGM_TOPIC, key, raw, source=SOURCE, clock=clock, event_id=event_id + ":cgm"
        )
    elif kind == "pump_history_event":
        event = pump_pb2.PumpEvent()
        event.CopyFrom(item.pump_history_event)
        # identity from the enrolment, never from the hub's say-so
        event.patient_id = item.patient_id
        event.device_id = item.device_id
        outbox.add(
            session,
            PUMP_EVENTS_TOPIC,
            key,
            event,
            source=SOURCE,
            clock=clock,
            event_id=event.event_id or event_id + ":pump",
        )


def publish_outcome(session: Session, outcome: device_pb2.PumpCommandOutcome, clock: Clock) -> None:
    event_id = f"{outcome.command_id}:{outcome.state}"
    if outbox.holds_event(session, event_id):
        # a command can reach a state twice only when a lost step is replayed (a settled
        # command offered again); consumers dedupe on the event id, so the first one stands
        return
    outbox.add(
        session,
        OUTCOMES_TOPIC,
        outcome.patient_id,
        outcome,
        source=SOURCE,
        clock=clock,
        event_id=event_id,
    )


def publish_command(
    session: Session,
    patient_id: str,
    command_id: str,
    signed: device_pb2.SignedPumpCommand,
    clock: Clock,
) -> None:
    """Fan a SendCommand out to every replica (the one holding the stream delivers it)."""
    outbox.add(
        session, COMMANDS_TOPIC, patient_id, signed, source=SOURCE, clock=clock, event_id=command_id
    )


def timestamp(value: object) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)  # type: ignore[arg-type]
    return ts


class CommandConsumer:
    """Reads pump.commands.v1 with this replica's own group; hands each command to `handle`.

    `handle` stores the command (idempotent on command_id) and, if this replica holds the
    device's stream, delivers it. The offset is committed only after `handle` returned.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        replica_id: str,
        handle: Callable[[device_pb2.SignedPumpCommand], None],
    ) -> None:
        self._servers = bootstrap_servers
        self._group = f"device-gateway-{replica_id}"
        self._handle = handle
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pump-commands", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._consume()
            except Exception:
                log.exception("pump.commands.v1 consumer failed; restarting in 1 s")
                self._stop.wait(1.0)

    def _consume(self) -> None:
        consumer = KafkaConsumer(
            COMMANDS_TOPIC,
            bootstrap_servers=self._servers,
            group_id=self._group,
            enable_auto_commit=False,
            # a new replica starts at the end: older commands are either delivered by the
            # replica that held the stream, or still queued in the shared table
            auto_offset_reset="latest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=2_000,
        )
        try:
            while not self._stop.is_set():
                batches = consumer.poll(timeout_ms=200, max_records=500)
                for records in batches.values():
                    for record in records:
                        try:
                            envelope = envelope_from_record(record)
                            signed = envelope.parse(device_pb2.SignedPumpCommand)
                        except (MalformedEventError, ValueError) as exc:
                            log.warning(
                                "skipping malformed pump command at %s: %s", record.offset, exc
                            )
                            continue
                        self._handle(signed)
                if batches:
                    consumer.commit()
        finally:
            consumer.close()
