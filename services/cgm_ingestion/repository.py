"""cgm-ingestion storage: the only module that queries its tables. Never commits."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    and_,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from services.cgm_ingestion.assessment import Fault, Trend
from services.cgm_ingestion.readings import RangeFlag, RawReading, Rejection
from services.cgm_ingestion.service import StoredReading
from services.runtime.db import new_metadata
from services.runtime.kafka import dedupe

__all__ = ["ReadingRepository", "metadata", "readings", "rejected_readings", "sensors"]

metadata = new_metadata()

readings = Table(
    "readings",
    metadata,
    Column("identity", String(32), primary_key=True),
    Column("patient_id", String(64), nullable=False),
    Column("sensor_id", String(64), nullable=False),
    # Microseconds since the epoch, UTC: exact, sortable, dialect-independent.
    Column("device_time_us", BigInteger, nullable=False),
    Column("glucose_mg_dl", Integer, nullable=False),
    Column("range_flag", String(12), nullable=False),
    Column("trend", String(24), nullable=False),
    Column("rate_mg_dl_per_min", Float, nullable=True),
    Column("noise_level", Integer, nullable=False),
    Column("faults", String(120), nullable=False),
    Column("quality", Integer, nullable=False),
    Column("received_at_us", BigInteger, nullable=False),
    Column("backfilled", Boolean, nullable=False),
    Column("sensor_started_at_us", BigInteger, nullable=True),
    Index("ix_readings_patient_sensor_time", "patient_id", "sensor_id", "device_time_us"),
    Index("ix_readings_patient_time", "patient_id", "device_time_us"),
)

rejected_readings = Table(
    "rejected_readings",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
    Column("rejected_at_us", BigInteger, nullable=False),
    Column("patient_id", String(64), nullable=False),
    Column("sensor_id", String(64), nullable=False),
    Column("event_id", String(64), nullable=False),
    Column("device_time_us", BigInteger, nullable=True),
    Column("value", Float, nullable=True),
    Column("unit", String(16), nullable=False),
    Column("reason", String(32), nullable=False),
    Column("detail", String(500), nullable=False),
    Column("payload", LargeBinary, nullable=True),
    Index("ix_rejected_readings_patient", "patient_id", "rejected_at_us"),
)

sensors = Table(
    "sensors",
    metadata,
    Column("sensor_id", String(64), primary_key=True),
    Column("first_seen_us", BigInteger, nullable=False),
)

dedupe.include_in(metadata)


def _us(value: datetime) -> int:
    return round(value.timestamp() * 1_000_000)


def _dt(value_us: int | None) -> datetime | None:
    return None if value_us is None else datetime.fromtimestamp(value_us / 1_000_000, UTC)


def _row(row: object) -> StoredReading:
    m = row._mapping  # type: ignore[attr-defined]
    device_time = _dt(m["device_time_us"])
    received = _dt(m["received_at_us"])
    assert device_time is not None
    assert received is not None
    faults = frozenset(Fault(f) for f in m["faults"].split(",") if f)
    return StoredReading(
        patient_id=m["patient_id"],
        sensor_id=m["sensor_id"],
        device_time=device_time,
        glucose_mg_dl=m["glucose_mg_dl"],
        range_flag=RangeFlag(m["range_flag"]),
        identity=m["identity"],
        trend=Trend(m["trend"]),
        rate_mg_dl_per_min=m["rate_mg_dl_per_min"],
        noise_level=m["noise_level"],
        faults=faults,
        quality=m["quality"],
        received_at=received,
        backfilled=bool(m["backfilled"]),
        sensor_started_at=_dt(m["sensor_started_at_us"]),
    )


def _values(reading: StoredReading) -> dict[str, object]:
    started = reading.sensor_started_at
    return {
        "identity": reading.identity,
        "patient_id": reading.patient_id,
        "sensor_id": reading.sensor_id,
        "device_time_us": _us(reading.device_time),
        "glucose_mg_dl": reading.glucose_mg_dl,
        "range_flag": reading.range_flag.value,
        "trend": reading.trend.value,
        "rate_mg_dl_per_min": reading.rate_mg_dl_per_min,
        "noise_level": reading.noise_level,
        "faults": ",".join(sorted(reading.faults)),
        "quality": reading.quality,
        "received_at_us": _us(reading.received_at),
        "backfilled": reading.backfilled,
        "sensor_started_at_us": _us(started) if started else None,
    }


class ReadingRepository:
    """Readings, rejections and sensors in the caller's session (the handler commits)."""

    def __init__(self, session: Session) -> None:
        self._session = session

    # -- used by IngestionService
    def find(self, identity: str) -> StoredReading | None:
        row = self._session.execute(select(readings).where(readings.c.identity == identity)).first()
        return _row(row) if row else None

    def series(
        self, patient_id: str, sensor_id: str, start: datetime, end: datetime
    ) -> list[StoredReading]:
        rows = self._session.execute(
            select(readings)
            .where(
                readings.c.patient_id == patient_id,
                readings.c.sensor_id == sensor_id,
                readings.c.device_time_us.between(_us(start), _us(end)),
            )
            .order_by(readings.c.device_time_us)
        )
        return [_row(r) for r in rows]

    def add(self, reading: StoredReading) -> None:
        self._session.execute(readings.insert().values(**_values(reading)))

    def update_assessment(self, reading: StoredReading) -> None:
        values = _values(reading)
        self._session.execute(
            update(readings)
            .where(readings.c.identity == reading.identity)
            .values(
                trend=values["trend"],
                rate_mg_dl_per_min=values["rate_mg_dl_per_min"],
                noise_level=values["noise_level"],
                faults=values["faults"],
                quality=values["quality"],
            )
        )

    def add_rejection(
        self, raw: RawReading, rejection: Rejection, at: datetime, payload: bytes | None = None
    ) -> None:
        device_time = raw.device_time
        self._session.execute(
            rejected_readings.insert().values(
                rejected_at_us=_us(at),
                patient_id=raw.patient_id[:64],
                sensor_id=raw.sensor_id[:64],
                event_id=raw.event_id[:64],
                device_time_us=_us(device_time) if device_time is not None else None,
                value=raw.value if raw.value == raw.value else None,  # NaN stored as NULL
                unit=raw.unit[:16],
                reason=rejection.reason.value,
                detail=rejection.detail[:500],
                payload=payload,
            )
        )

    def first_seen(self, sensor_id: str) -> datetime | None:
        value = self._session.execute(
            select(sensors.c.first_seen_us).where(sensors.c.sensor_id == sensor_id)
        ).scalar_one_or_none()
        return _dt(value)

    def note_sensor(self, sensor_id: str, seen: datetime) -> None:
        """Remember when a sensor was first seen (its warm-up clock when it does not say)."""
        current = self.first_seen(sensor_id)
        if current is None:
            self._session.execute(
                sensors.insert().values(sensor_id=sensor_id, first_seen_us=_us(seen))
            )
        elif seen < current:
            self._session.execute(
                update(sensors)
                .where(sensors.c.sensor_id == sensor_id)
                .values(first_seen_us=_us(seen))
            )

    def latest_time(self, patient_id: str, sensor_id: str) -> datetime | None:
        value = self._session.execute(
            select(func.max(readings.c.device_time_us)).where(
                readings.c.patient_id == patient_id, readings.c.sensor_id == sensor_id
            )
        ).scalar_one_or_none()
        return _dt(value)

    # -- queries for the gRPC API
    def page(
        self,
        patient_id: str,
        start: datetime | None,
        end: datetime | None,
        after: tuple[int, str] | None,
        limit: int,
    ) -> list[StoredReading]:
        """Readings of a person in time order, after the (time, identity) cursor."""
        conditions = [readings.c.patient_id == patient_id]
        if start is not None:
            conditions.append(readings.c.device_time_us >= _us(start))
        if end is not None:
            conditions.append(readings.c.device_time_us < _us(end))
        if after is not None:
            t_us, identity = after
            conditions.append(
                or_(
                    readings.c.device_time_us > t_us,
                    and_(readings.c.device_time_us == t_us, readings.c.identity > identity),
                )
            )
        rows = self._session.execute(
            select(readings)
            .where(*conditions)
            .order_by(readings.c.device_time_us, readings.c.identity)
            .limit(limit)
        )
        return [_row(r) for r in rows]

    def latest(self, patient_id: str) -> StoredReading | None:
        row = self._session.execute(
            select(readings)
            .where(readings.c.patient_id == patient_id)
            .order_by(readings.c.device_time_us.desc())
            .limit(1)
        ).first()
        return _row(row) if row else None

    def rejections(self, patient_id: str | None = None) -> list[dict[str, object]]:
        query = select(rejected_readings).order_by(rejected_readings.c.id)
        if patient_id is not None:
            query = query.where(rejected_readings.c.patient_id == patient_id)
        return [dict(r._mapping) for r in self._session.execute(query)]


def cursor_of(reading: StoredReading) -> tuple[int, str]:
    return _us(reading.device_time), reading.identity
