"""cgm-ingestion on Kafka: the raw-reading handler and the outgoing event shapes.

The only module of the service that knows topics. The handler changes storage and writes
outgoing events into the outbox in the runner's transaction; it never commits or publishes.
"""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2
from sqlalchemy.orm import Session

from services.cgm_ingestion.assessment import Fault, Trend
from services.cgm_ingestion.readings import RangeFlag, RawReading, Rejection, RejectReason
from services.cgm_ingestion.repository import PendingWrites, ReadingRepository, SeriesCache
from services.cgm_ingestion.service import (
    CgmEvent,
    CgmEventKind,
    IngestionService,
    IngestOutcome,
    StoredReading,
)
from services.runtime import outbox
from services.runtime.clock import Clock
from services.runtime.fast_init import without_init
from services.runtime.kafka.envelope import (
    Envelope,
    MalformedEventError,
    ProtoMessage,
)

__all__ = [
    "EVENTS_TOPIC",
    "RAW_TOPIC",
    "READINGS_TOPIC",
    "SOURCE",
    "RawHandler",
    "handle_raw",
    "make_handler",
    "measured_order_key",
    "raw_from_proto",
    "reading_to_proto",
]

RAW_TOPIC = "cgm.readings.raw.v1"
READINGS_TOPIC = "cgm.readings.v1"
EVENTS_TOPIC = "cgm.events.v1"
SOURCE = "langerhans/cgm-ingestion"
_ID_NAMESPACE = uuid.UUID("6f1d3c2e-8a57-4c1b-9e53-3f7d2b0c9a11")
_ID_NAMESPACE_BYTES = _ID_NAMESPACE.bytes
# The variant nibble of a UUID (RFC 4122: binary 10xx) from the hash's nibble.
_VARIANT = {f"{n:x}": f"{(n & 0x3) | 0x8:x}" for n in range(16)}


def _uuid5(name: str) -> str:
    """`str(uuid.uuid5(_ID_NAMESPACE, name))` from the hex digest (once or twice per
    reading; the UUID object's integer bit-twiddling and formatting cost more than SHA-1)."""
    h = hashlib.sha1(_ID_NAMESPACE_BYTES + name.encode(), usedforsecurity=False).hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


_UNITS = {
    common_pb2.GLUCOSE_UNIT_MG_DL: "mg/dL",
    common_pb2.GLUCOSE_UNIT_MMOL_L: "mmol/L",
}
_TRENDS = {
    Trend.DOUBLE_UP: common_pb2.TREND_DOUBLE_UP,
    Trend.SINGLE_UP: common_pb2.TREND_SINGLE_UP,
    Trend.FORTY_FIVE_UP: common_pb2.TREND_FORTY_FIVE_UP,
    Trend.FLAT: common_pb2.TREND_FLAT,
    Trend.FORTY_FIVE_DOWN: common_pb2.TREND_FORTY_FIVE_DOWN,
    Trend.SINGLE_DOWN: common_pb2.TREND_SINGLE_DOWN,
    Trend.DOUBLE_DOWN: common_pb2.TREND_DOUBLE_DOWN,
    Trend.NOT_COMPUTABLE: common_pb2.TREND_NOT_COMPUTABLE,
    Trend.RATE_OUT_OF_RANGE: common_pb2.TREND_RATE_OUT_OF_RANGE,
}
_FLAGS = {
    RangeFlag.IN_RANGE: cgm_pb2.GLUCOSE_RANGE_FLAG_IN_RANGE,
    RangeFlag.LOW: cgm_pb2.GLUCOSE_RANGE_FLAG_LOW,
    RangeFlag.HIGH: cgm_pb2.GLUCOSE_RANGE_FLAG_HIGH,
}
_FAULTS = {
    Fault.COMPRESSION_LOW: cgm_pb2.SENSOR_FAULT_COMPRESSION_LOW,
    Fault.FLAT_SIGNAL: cgm_pb2.SENSOR_FAULT_FLAT,
    Fault.JUMP: cgm_pb2.SENSOR_FAULT_JUMP,
    Fault.WARM_UP: cgm_pb2.SENSOR_FAULT_WARM_UP,
}
_REASONS = {
    RejectReason.UNDECODABLE: cgm_pb2.REJECTION_REASON_MISSING_FIELD,
    RejectReason.MISSING_PATIENT: cgm_pb2.REJECTION_REASON_MISSING_FIELD,
    RejectReason.MISSING_SENSOR: cgm_pb2.REJECTION_REASON_MISSING_FIELD,
    RejectReason.MISSING_TIMESTAMP: cgm_pb2.REJECTION_REASON_MISSING_FIELD,
    RejectReason.NAIVE_TIMESTAMP: cgm_pb2.REJECTION_REASON_MISSING_FIELD,
    RejectReason.FUTURE_TIMESTAMP: cgm_pb2.REJECTION_REASON_FUTURE_TIMESTAMP,
    RejectReason.TOO_OLD: cgm_pb2.REJECTION_REASON_TOO_OLD,
    RejectReason.UNKNOWN_UNIT: cgm_pb2.REJECTION_REASON_UNKNOWN_UNIT,
    RejectReason.NON_FINITE_VALUE: cgm_pb2.REJECTION_REASON_IMPLAUSIBLE_VALUE,
    RejectReason.IMPLAUSIBLE_VALUE: cgm_pb2.REJECTION_REASON_IMPLAUSIBLE_VALUE,
    RejectReason.CONFLICTING_DUPLICATE: cgm_pb2.REJECTION_REASON_CONFLICTING_DUPLICATE,
}


# Seconds of 1970-01-01 … 9999-12-31T23:59:59 UTC: a valid Timestamp's range (protobuf's).
_MIN_SECONDS = -62_135_596_800
_MAX_SECONDS = 253_402_300_799
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _device_time(at: Any) -> datetime | None:
    """`at.ToDatetime(UTC)`, None outside protobuf's Timestamp range (years 1-9999): no time
    at all, rejected as missing rather than raising out of the handler (found by tests/fuzz).
    A valid Timestamp is converted here with the same arithmetic (epoch + seconds + whole
    µs of the nanos), without its checks and zone conversion (once per reading)."""
    seconds, nanos = at.seconds, at.nanos
    if _MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos < 1_000_000_000:
        return _EPOCH + timedelta(seconds=seconds, microseconds=nanos // 1000)
    with contextlib.suppress(ValueError):
        return at.ToDatetime(UTC)  # type: ignore[no-any-return]
    return None


def raw_from_proto(message: cgm_pb2.RawCgmReading, event_id: str = "") -> RawReading:
    device_time = _device_time(message.measured_at) if message.HasField("measured_at") else None
    started = None
    if device_time is not None and message.sensor_age_min:
        with contextlib.suppress(OverflowError):  # an age reaching before year 1: unknown
            started = device_time - timedelta(minutes=message.sensor_age_min)
    glucose = message.glucose
    unit = _UNITS.get(glucose.unit) or f"unit#{glucose.unit}"
    return without_init(  # once per reading on the hot path
        RawReading,
        patient_id=message.patient_id,
        sensor_id=message.sensor_id,
        device_time=device_time,
        value=glucose.value if message.HasField("glucose") else float("nan"),
        unit=unit,
        sensor_started_at=started,
        event_id=event_id or message.source_record_id,
    )


_MICROSECOND = timedelta(microseconds=1)


def _set_timestamp(target: Any, value: datetime) -> None:
    """`Timestamp.FromDatetime` for an aware datetime (the same seconds and nanos, exact
    integer arithmetic) without its time-tuple round trip: twice per validated reading."""
    if value.tzinfo is None:
        target.FromDatetime(value)
        return
    seconds, micros = divmod((value - _EPOCH) // _MICROSECOND, 1_000_000)
    target.seconds = seconds
    target.nanos = micros * 1000


def reading_to_proto(
    reading: StoredReading, *, source: int = 0, device_id: str = "", original_unit: int = 0
) -> cgm_pb2.CgmReading:
    message = cgm_pb2.CgmReading(
        reading_id=reading_id(reading.identity),
        patient_id=reading.patient_id,
        device_id=device_id,
        sensor_id=reading.sensor_id,
        glucose_mg_dl=float(reading.glucose_mg_dl),
        range_flag=_FLAGS[reading.range_flag],
        trend=_TRENDS[reading.trend],
        noise_level=reading.noise_level,
        quality_score=float(reading.quality),
        faults=[_FAULTS[f] for f in sorted(reading.faults) if f in _FAULTS],
        source=source,  # type: ignore[arg-type]
        backfill=reading.backfilled,
        original_unit=original_unit,  # type: ignore[arg-type]
    )
    _set_timestamp(message.measured_at, reading.device_time)
    _set_timestamp(message.received_at, reading.received_at)
    if reading.rate_mg_dl_per_min is not None:
        message.rate_mg_dl_per_min = reading.rate_mg_dl_per_min
    return message


def reading_id(identity: str) -> str:
    """Stable id of a validated reading (also its event id: re-publication dedupes)."""
    return _uuid5(identity)


def _event_to_proto(event: CgmEvent, now: datetime) -> cgm_pb2.CgmEvent:
    key = f"{event.kind}|{event.patient_id}|{event.sensor_id}|{event.fault}|{event.start_time}"
    if event.kind is CgmEventKind.GAP_DETECTED:
        # A reading backfilled into a gap opens a shorter gap from the same start: its own
        # event (the same id made the outbox insert fail and the reading be dead-lettered).
        key += f"|{event.end_time}"
    message = cgm_pb2.CgmEvent(event_id=_uuid5(key), patient_id=event.patient_id)
    message.detected_at.FromDatetime(now)
    if event.kind is CgmEventKind.GAP_DETECTED:
        gap_min = int((event.end_time - event.start_time).total_seconds() // 60)
        message.gap_detected.sensor_id = event.sensor_id
        message.gap_detected.gap.start_time.FromDatetime(event.start_time)
        message.gap_detected.gap.end_time.FromDatetime(event.end_time)
        message.gap_detected.gap_min = gap_min
        message.gap_detected.missing_readings = max(0, gap_min // 5 - 1)
    else:
        assert event.fault is not None
        message.sensor_fault_detected.sensor_id = event.sensor_id
        message.sensor_fault_detected.fault = _FAULTS.get(
            event.fault, cgm_pb2.SENSOR_FAULT_DEVICE_REPORTED
        )
        message.sensor_fault_detected.detail = event.detail
    return message


def _to_outbox(
    session: Session, topic: str, key: str, message: ProtoMessage, *, clock: Clock, event_id: str
) -> None:
    """The hot path (one row per validated reading): on the batch path `outbox.add` collects
    the row for the batch's multi-row insert (same transaction, same order)."""
    outbox.add(session, topic, key, message, source=SOURCE, clock=clock, event_id=event_id)


def publish_outcome(
    session: Session,
    outcome: IngestOutcome,
    clock: Clock,
    raw: cgm_pb2.RawCgmReading | None = None,
    *,
    readings_topic: str = READINGS_TOPIC,
    events_topic: str = EVENTS_TOPIC,
) -> None:
    """Put a handled reading's outgoing events into the outbox (same transaction)."""
    if outcome.reading is not None:
        reading = outcome.reading
        message = reading_to_proto(
            reading,
            source=raw.source if raw is not None else 0,
            device_id=raw.device_id if raw is not None else "",
            original_unit=raw.glucose.unit if raw is not None else 0,
        )
        _to_outbox(
            session,
            readings_topic,
            reading.patient_id,
            message,
            clock=clock,
            event_id=message.reading_id,
        )
    for event in outcome.events:
        proto = _event_to_proto(event, clock.now())
        # An episode (start to recovery) can be found twice: a reading backfilled into a
        # compression low already reported completes the recovery again, from the same start.
        # Looked up for episodes only: they are rare, and the lookup is not free.
        episode = event.fault is Fault.COMPRESSION_LOW and event.end_time > event.start_time
        if episode and outbox.holds_event(session, proto.event_id):
            continue
        _to_outbox(
            session, events_topic, event.patient_id, proto, clock=clock, event_id=proto.event_id
        )


def handle_raw(
    envelope: Envelope,
    session: Session,
    clock: Clock,
    night_time_zone: str,
    *,
    readings_topic: str = READINGS_TOPIC,
    events_topic: str = EVENTS_TOPIC,
    cache: SeriesCache | None = None,
    parsed: cgm_pb2.RawCgmReading | None = None,
    service: IngestionService | None = None,
) -> None:
    """One raw reading: validate, dedupe, store, assess; outgoing events into the outbox.

    `service`: one already built on a `ReadingRepository(session, cache)` (a batch reuses
    it for all its readings)."""
    if service is None:
        service = IngestionService(ReadingRepository(session, cache), clock, night_time_zone)
    try:
        message = parsed if parsed is not None else envelope.parse(cgm_pb2.RawCgmReading)
    except MalformedEventError as exc:
        # Garbage is recorded with its bytes, never dropped and never a crash.
        raw = RawReading(envelope.key, "", None, float("nan"), "", event_id=envelope.event_id)
        service.reject(raw, Rejection(RejectReason.UNDECODABLE, str(exc)), envelope.data)
        return
    raw = raw_from_proto(message, envelope.event_id)
    outcome = service.ingest(raw)
    publish_outcome(
        session, outcome, clock, message, readings_topic=readings_topic, events_topic=events_topic
    )


def measured_order_key(envelope: Envelope) -> tuple[str, float]:
    """Sort key putting one poll's readings of a person in measurement order (garbage first)."""
    try:
        message = envelope.parse(cgm_pb2.RawCgmReading)
    except MalformedEventError:
        return envelope.key, float("-inf")
    if not message.HasField("measured_at"):
        return envelope.key, float("-inf")
    return envelope.key, message.measured_at.seconds + message.measured_at.nanos / 1e9


class RawHandler:
    """The runner's handler. `batch(envelopes)` marks a poll batch: its writes become
    multi-row inserts at commit and each payload is parsed once (sorting needs it too)."""

    def __init__(
        self,
        clock: Clock,
        night_time_zone: str = "UTC",
        readings_topic: str = READINGS_TOPIC,
        events_topic: str = EVENTS_TOPIC,
        cache: SeriesCache | None = None,
    ) -> None:
        self._clock = clock
        self._zone = night_time_zone
        self._readings_topic = readings_topic
        self._events_topic = events_topic
        self._cache = cache
        self._parsed: dict[str, cgm_pb2.RawCgmReading] | None = None
        # The batch's session and the service on it (built once per batch, not per reading).
        self._batch: tuple[Session, IngestionService] | None = None

    def order(self, envelopes: list[Envelope]) -> list[int]:
        """Positions of `envelopes` in measurement order per person (garbage first);
        remembers the parsed payloads for the following batch."""
        parsed: dict[str, cgm_pb2.RawCgmReading] = {}
        keys: list[tuple[str, float]] = []
        for envelope in envelopes:
            try:
                message = envelope.parse(cgm_pb2.RawCgmReading)
            except MalformedEventError:
                keys.append((envelope.key, float("-inf")))
                continue
            parsed[envelope.event_id] = message
            if message.HasField("measured_at"):
                at = message.measured_at
                keys.append((envelope.key, at.seconds + at.nanos / 1e9))
            else:
                keys.append((envelope.key, float("-inf")))
        self._parsed = parsed
        self._batch = None
        return sorted(range(len(envelopes)), key=keys.__getitem__)

    def end_batch(self) -> None:
        self._parsed = None
        self._batch = None

    def __call__(self, envelope: Envelope, session: Session) -> None:
        parsed = None
        service = None
        if self._parsed is not None:
            if self._batch is None or self._batch[0] is not session:
                # Batch path: writes are collected and inserted together before the commit.
                PendingWrites.start(session)
                outbox.batch_inserts(session)
                repository = ReadingRepository(session, self._cache)
                self._batch = (session, IngestionService(repository, self._clock, self._zone))
            service = self._batch[1]
            parsed = self._parsed.get(envelope.event_id)
        handle_raw(
            envelope,
            session,
            self._clock,
            self._zone,
            readings_topic=self._readings_topic,
            events_topic=self._events_topic,
            cache=self._cache,
            parsed=parsed,
            service=service,
        )


def make_handler(
    clock: Clock,
    night_time_zone: str = "UTC",
    readings_topic: str = READINGS_TOPIC,
    events_topic: str = EVENTS_TOPIC,
    cache: SeriesCache | None = None,
) -> RawHandler:
    return RawHandler(clock, night_time_zone, readings_topic, events_topic, cache)
