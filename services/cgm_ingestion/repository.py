"""cgm-ingestion storage: the only module that queries its tables. Never commits."""

from __future__ import annotations

import bisect
import sqlite3
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

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
    bindparam,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.cgm_ingestion.assessment import Fault, Trend
from services.cgm_ingestion.readings import RangeFlag, RawReading, Rejection, ValidReading
from services.cgm_ingestion.service import StoredReading, Window
from services.runtime.db import new_metadata, sqlite_driver
from services.runtime.kafka import dedupe

__all__ = [
    "PendingWrites",
    "ReadingRepository",
    "SeriesCache",
    "metadata",
    "readings",
    "rejected_readings",
    "sensors",
]

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
    return _from_mapping(row._mapping)  # type: ignore[attr-defined]


def _from_mapping(m: Any) -> StoredReading:
    device_time_us = m["device_time_us"]
    device_time = _dt(device_time_us)
    received = _dt(m["received_at_us"])
    assert device_time is not None
    assert received is not None
    faults = frozenset(Fault(f) for f in m["faults"].split(",") if f)
    return StoredReading.new(
        m["patient_id"],
        m["sensor_id"],
        device_time,
        m["glucose_mg_dl"],
        RangeFlag(m["range_flag"]),
        m["identity"],
        Trend(m["trend"]),
        m["rate_mg_dl_per_min"],
        m["noise_level"],
        faults,
        m["quality"],
        received,
        bool(m["backfilled"]),
        _dt(m["sensor_started_at_us"]),
        # What device_time.timestamp() gives: the exact quotient, correctly rounded.
        device_time_us / 1_000_000,
    )


def _values(reading: StoredReading) -> tuple[Any, ...]:
    """The row of `reading`, in the order of `_READING_COLUMNS` (the table's columns)."""
    started = reading.sensor_started_at
    return (
        reading.identity,
        reading.patient_id,
        reading.sensor_id,
        _us(reading.device_time),
        reading.glucose_mg_dl,
        reading.range_flag.value,
        reading.trend.value,
        reading.rate_mg_dl_per_min,
        reading.noise_level,
        ",".join(sorted(reading.faults)),
        reading.quality,
        _us(reading.received_at),
        reading.backfilled,
        _us(started) if started else None,
    )


# Readings kept in memory per series once loaded: enough for every backward-looking check.
CACHE_HISTORY_S = 3 * 3600

_insert_reading = {
    "sqlite": sqlite_insert(readings).on_conflict_do_nothing(index_elements=["identity"]),
    "postgresql": pg_insert(readings).on_conflict_do_nothing(index_elements=["identity"]),
}
_update_assessment = (
    update(readings)
    .where(readings.c.identity == bindparam("b_identity"))
    .values(
        trend=bindparam("b_trend"),
        rate_mg_dl_per_min=bindparam("b_rate"),
        noise_level=bindparam("b_noise"),
        faults=bindparam("b_faults"),
        quality=bindparam("b_quality"),
    )
)
_insert_sensor = sensors.insert()
_insert_rejection = rejected_readings.insert()
_update_sensor = (
    update(sensors)
    .where(sensors.c.sensor_id == bindparam("b_sensor"))
    .values(first_seen_us=bindparam("b_first"))
)

SeriesKey = tuple[str, str]
_plain_insert_reading = readings.insert()
_READING_COLUMNS = tuple(c.name for c in readings.columns)
_TREND_AT = _READING_COLUMNS.index("trend")
_RATE_AT = _READING_COLUMNS.index("rate_mg_dl_per_min")
_NOISE_AT = _READING_COLUMNS.index("noise_level")
_FAULTS_AT = _READING_COLUMNS.index("faults")
_QUALITY_AT = _READING_COLUMNS.index("quality")
_SQLITE_SERIES = (
    f"SELECT {', '.join(_READING_COLUMNS)} FROM readings"  # noqa: S608 (constant names)
    " WHERE patient_id = ? AND sensor_id = ? AND device_time_us >= ?"
    " ORDER BY device_time_us"
)
_SQLITE_SERIES_UNTIL = _SQLITE_SERIES.replace(" ORDER BY", " AND device_time_us <= ? ORDER BY")


_SQLITE_INSERT_READING = (
    f"INSERT INTO readings ({', '.join(_READING_COLUMNS)})"  # noqa: S608 (constant names)
    f" VALUES ({', '.join('?' * len(_READING_COLUMNS))})"
)


class PendingWrites:
    """Rows of one poll batch written with one multi-row statement each, just before commit.

    Only used on the batch path, where the series cache decides what is new: a reading the
    cache missed (another member stored it) makes the plain INSERT fail, the runner rolls the
    whole batch back and handles its records one by one, where each insert is
    `ON CONFLICT DO NOTHING` and a conflict counts as a duplicate. Any query of the readings
    table flushes first, so the transaction always reads its own writes.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self.readings: dict[str, tuple[Any, ...]] = {}  # rows as `_values` builds them
        event.listen(session, "before_commit", self._before_commit)

    @staticmethod
    def of(session: Session) -> PendingWrites | None:
        pending: PendingWrites | None = session.info.get("cgm_pending")
        return pending

    @staticmethod
    def start(session: Session) -> PendingWrites:
        pending = PendingWrites.of(session)
        if pending is None:
            pending = PendingWrites(session)
            session.info["cgm_pending"] = pending
        return pending

    def _before_commit(self, session: Session) -> None:
        self.flush()

    def flush(self) -> None:
        # Outgoing events: services.runtime.outbox.batch_inserts, flushed at the same commit.
        if not self.readings:
            return
        rows = list(self.readings.values())
        self.readings = {}
        raw = sqlite_driver(self._session)
        if raw is None:
            self._session.execute(
                _plain_insert_reading, [dict(zip(_READING_COLUMNS, r, strict=True)) for r in rows]
            )
            return
        # Straight to the driver: every column here is a plain string, number, bool or NULL,
        # which the driver stores as SQLAlchemy would.
        try:
            raw.executemany(_SQLITE_INSERT_READING, rows)
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(_SQLITE_INSERT_READING, None, exc) from exc


@dataclass
class _Series:
    """Every stored reading of one series from `loaded_from_us` on, sorted by time.

    `times_us` runs parallel to `rows` (their device times): bisecting it replaces building a
    list of times for every lookup, which was a large share of the handler's CPU.
    """

    loaded_from_us: int
    rows: list[StoredReading]
    identities: set[str]
    times_us: list[int]
    # The same times in seconds (`time_s()`) and the values as floats: what the assessment
    # kernel takes, sliced instead of rebuilt from the rows for every new reading.
    times_s: list[float]
    values: list[float]

    @staticmethod
    def of(loaded_from_us: int, rows: list[StoredReading]) -> _Series:
        return _Series(
            loaded_from_us,
            rows,
            {r.identity for r in rows},
            [_us(r.device_time) for r in rows],
            [r.time_s() for r in rows],
            [float(r.glucose_mg_dl) for r in rows],
        )

    def copy(self) -> _Series:
        return _Series(
            self.loaded_from_us,
            list(self.rows),
            set(self.identities),
            list(self.times_us),
            list(self.times_s),
            list(self.values),
        )


class SeriesCache:
    """Committed recent readings per (patient, sensor), shared by one process's transactions.

    A transaction works on copies and the copies replace the cached series only after its
    commit; a rollback drops them. Everything older than the loaded range goes to the
    database. Safe with one consumer per partition (the key is the patient); `clear()` on a
    rebalance, and the unique identity in the table catches anything a stale cache missed.
    """

    def __init__(self) -> None:
        self._series: dict[SeriesKey, _Series] = {}
        self._sensors: dict[str, int] = {}
        self._lock = threading.Lock()

    def get(self, key: SeriesKey) -> _Series | None:
        with self._lock:
            found = self._series.get(key)
            return found.copy() if found is not None else None

    def sensor(self, sensor_id: str) -> int | None:
        with self._lock:
            return self._sensors.get(sensor_id)

    def publish(self, series: dict[SeriesKey, _Series], sensor_times: dict[str, int]) -> None:
        with self._lock:
            for key, fresh in series.items():
                kept = fresh
                if fresh.rows:
                    # Keep the cache bounded: drop what is older than the history we need.
                    floor = fresh.times_us[-1] - CACHE_HISTORY_S * 1_000_000
                    if floor > fresh.loaded_from_us:
                        cut = bisect.bisect_left(fresh.times_us, floor)
                        if cut:
                            # The transaction's own copy: drop the cut rows' identities
                            # rather than rebuild the set from the rows kept.
                            identities = fresh.identities
                            identities.difference_update([r.identity for r in fresh.rows[:cut]])
                            kept = _Series(
                                floor,
                                fresh.rows[cut:],
                                identities,
                                fresh.times_us[cut:],
                                fresh.times_s[cut:],
                                fresh.values[cut:],
                            )
                        else:
                            kept = replace(fresh, loaded_from_us=floor)
                self._series[key] = kept
            self._sensors.update(sensor_times)

    def clear(self) -> None:
        with self._lock:
            self._series.clear()
            self._sensors.clear()


class ReadingRepository:
    """Readings, rejections and sensors in the caller's session (the handler commits)."""

    def __init__(self, session: Session, cache: SeriesCache | None = None) -> None:
        self._session = session
        self._cache = cache
        if cache is not None and "cgm_work" not in session.info:
            session.info["cgm_work"] = {}
            session.info["cgm_sensors"] = {}
            event.listen(session, "after_commit", self._after_commit)
            event.listen(session, "after_rollback", self._after_rollback)

    @property
    def _work(self) -> dict[SeriesKey, _Series]:
        work: dict[SeriesKey, _Series] = self._session.info.setdefault("cgm_work", {})
        return work

    def _after_commit(self, session: Session) -> None:
        if self._cache is not None:
            self._cache.publish(session.info["cgm_work"], session.info["cgm_sensors"])
        session.info["cgm_work"] = {}
        session.info["cgm_sensors"] = {}

    @staticmethod
    def _after_rollback(session: Session) -> None:
        session.info["cgm_work"] = {}
        session.info["cgm_sensors"] = {}

    def _series_from(self, patient_id: str, sensor_id: str, at_us: int) -> _Series | None:
        """The working copy of a series, if the cache covers `at_us` (loading it if needed)."""
        if self._cache is None:
            return None
        key = (patient_id, sensor_id)
        work = self._work.get(key)
        if work is None:
            work = self._cache.get(key)
            if work is None:
                floor = at_us - CACHE_HISTORY_S * 1_000_000
                rows = self._select_series(patient_id, sensor_id, floor, None)
                work = _Series.of(floor, rows)
            self._work[key] = work
        return work if at_us >= work.loaded_from_us else None

    def _select_series(
        self, patient_id: str, sensor_id: str, start_us: int, end_us: int | None
    ) -> list[StoredReading]:
        conditions = [
            readings.c.patient_id == patient_id,
            readings.c.sensor_id == sensor_id,
            readings.c.device_time_us >= start_us,
        ]
        if end_us is not None:
            conditions.append(readings.c.device_time_us <= end_us)
        self._flush_pending()
        raw = sqlite_driver(self._session)
        if raw is not None:
            # Straight to the driver (a statement built per new series cost more than its run;
            # the columns are plain values, the Boolean read as SQLAlchemy reads it: bool()).
            sql = _SQLITE_SERIES if end_us is None else _SQLITE_SERIES_UNTIL
            params = (patient_id, sensor_id, start_us) + (() if end_us is None else (end_us,))
            return [
                _from_mapping(dict(zip(_READING_COLUMNS, r, strict=True)))
                for r in raw.execute(sql, params)
            ]
        rows = self._session.execute(
            select(readings).where(*conditions).order_by(readings.c.device_time_us)
        )
        return [_row(r) for r in rows]

    # -- used by IngestionService
    def find(self, reading: ValidReading) -> StoredReading | None:
        series = self._series_from(reading.patient_id, reading.sensor_id, _us(reading.device_time))
        if series is not None:
            if reading.identity not in series.identities:
                return None
            return next(r for r in series.rows if r.identity == reading.identity)
        self._flush_pending()
        row = self._session.execute(
            select(readings).where(readings.c.identity == reading.identity)
        ).first()
        return _row(row) if row else None

    def series(
        self, patient_id: str, sensor_id: str, start: datetime, end: datetime
    ) -> list[StoredReading]:
        window = self.window(patient_id, sensor_id, _us(start), _us(end))
        if window is not None:
            return window[0]
        return self._select_series(patient_id, sensor_id, _us(start), _us(end))

    def window(self, patient_id: str, sensor_id: str, start_us: int, end_us: int) -> Window | None:
        """`series` from the cache with the readings' times (s) and values (float); None when
        the cache does not cover `start_us` (the caller queries `series`)."""
        cached = self._series_from(patient_id, sensor_id, start_us)
        if cached is None:
            return None
        # _us is exact for microsecond datetimes: the same bounds as comparing times.
        lo = bisect.bisect_left(cached.times_us, start_us)
        hi = bisect.bisect_right(cached.times_us, end_us, lo)
        return cached.rows[lo:hi], cached.times_s[lo:hi], cached.values[lo:hi]

    def _flush_pending(self) -> None:
        pending = PendingWrites.of(self._session)
        if pending is not None:
            pending.flush()

    def add(self, reading: StoredReading) -> bool:
        pending = PendingWrites.of(self._session)
        if pending is not None and self._cache is not None:
            if reading.identity in pending.readings:
                return False
            pending.readings[reading.identity] = _values(reading)
            self._remember(reading)
            return True
        statement = _insert_reading[self._session.get_bind().dialect.name]
        result = self._session.execute(
            statement, dict(zip(_READING_COLUMNS, _values(reading), strict=True))
        )
        if getattr(result, "rowcount", 1) == 0:
            # Stored by someone the cache did not know about: a duplicate after all.
            if self._cache is not None:
                self._cache.clear()
                self._work.pop((reading.patient_id, reading.sensor_id), None)
            return False
        self._remember(reading)
        return True

    def _remember(self, reading: StoredReading) -> None:
        series = self._work.get((reading.patient_id, reading.sensor_id))
        time_us = _us(reading.device_time)
        if series is not None and time_us >= series.loaded_from_us:
            at = bisect.bisect_left(series.times_us, time_us)
            series.rows.insert(at, reading)
            series.times_us.insert(at, time_us)
            series.times_s.insert(at, reading.time_s())
            series.values.insert(at, float(reading.glucose_mg_dl))
            series.identities.add(reading.identity)

    def update_assessment(self, reading: StoredReading) -> None:
        values = _values(reading)
        pending = PendingWrites.of(self._session)
        if pending is not None and reading.identity in pending.readings:
            # Not written yet: the pending row takes the new assessment.
            pending.readings[reading.identity] = values
            self._update_work(reading)
            return
        self._session.execute(
            _update_assessment,
            [
                {
                    "b_identity": reading.identity,
                    "b_trend": values[_TREND_AT],
                    "b_rate": values[_RATE_AT],
                    "b_noise": values[_NOISE_AT],
                    "b_faults": values[_FAULTS_AT],
                    "b_quality": values[_QUALITY_AT],
                }
            ],
        )
        self._update_work(reading)

    def _update_work(self, reading: StoredReading) -> None:
        series = self._work.get((reading.patient_id, reading.sensor_id)) if self._cache else None
        if series is not None:
            series.rows = [reading if r.identity == reading.identity else r for r in series.rows]

    def add_rejection(
        self, raw: RawReading, rejection: Rejection, at: datetime, payload: bytes | None = None
    ) -> None:
        device_time = raw.device_time
        # One compiled statement with parameters (`insert().values(...)` built and compiled a
        # statement per rejection: ~0.4 ms each, a flood of garbage slowed everything else).
        self._session.execute(
            _insert_rejection,
            [
                {
                    "rejected_at_us": _us(at),
                    "patient_id": raw.patient_id[:64],
                    "sensor_id": raw.sensor_id[:64],
                    "event_id": raw.event_id[:64],
                    "device_time_us": _us(device_time) if device_time is not None else None,
                    "value": raw.value if raw.value == raw.value else None,  # NaN: NULL
                    "unit": raw.unit[:16],
                    "reason": rejection.reason.value,
                    "detail": rejection.detail[:500],
                    "payload": payload,
                }
            ],
        )

    def _first_seen_us(self, sensor_id: str) -> int | None:
        if self._cache is not None:
            pending = self._session.info["cgm_sensors"].get(sensor_id)
            if pending is not None:
                return int(pending)
            cached = self._cache.sensor(sensor_id)
            if cached is not None:
                return cached
        raw = sqlite_driver(self._session)
        if raw is not None:
            found = raw.execute(
                "SELECT first_seen_us FROM sensors WHERE sensor_id = ?", (sensor_id,)
            ).fetchone()
            value = None if found is None else found[0]
        else:
            value = self._session.execute(
                select(sensors.c.first_seen_us).where(sensors.c.sensor_id == sensor_id)
            ).scalar_one_or_none()
        if value is not None and self._cache is not None:
            self._session.info["cgm_sensors"][sensor_id] = value
        return None if value is None else int(value)

    def first_seen(self, sensor_id: str) -> datetime | None:
        return _dt(self._first_seen_us(sensor_id))

    def note_sensor(self, sensor_id: str, seen: datetime) -> None:
        """Remember when a sensor was first seen (its warm-up clock when it does not say)."""
        current = self._first_seen_us(sensor_id)
        seen_us = _us(seen)
        if current is None:
            # The driver only when writing: looking it up cost more than the rest per reading.
            raw = sqlite_driver(self._session)
            if raw is not None:
                try:
                    raw.execute(
                        "INSERT INTO sensors (sensor_id, first_seen_us) VALUES (?, ?)",
                        (sensor_id, seen_us),
                    )
                except sqlite3.IntegrityError as exc:
                    raise IntegrityError("INSERT INTO sensors", None, exc) from exc
            else:
                self._session.execute(
                    _insert_sensor, [{"sensor_id": sensor_id, "first_seen_us": seen_us}]
                )
        elif seen_us < current:
            self._session.execute(_update_sensor, [{"b_sensor": sensor_id, "b_first": seen_us}])
        else:
            return
        if self._cache is not None:
            self._session.info["cgm_sensors"][sensor_id] = seen_us

    def has_newer(self, patient_id: str, sensor_id: str, at: datetime) -> bool:
        series = self._work.get((patient_id, sensor_id)) if self._cache else None
        if series is not None and not series.rows and _us(at) >= series.loaded_from_us:
            # The working series holds every stored reading from before `at` on, and there
            # are none: nothing later is stored (saves a query per new person).
            return False
        latest = self.latest_time(patient_id, sensor_id)
        return latest is not None and latest > at

    def latest_time(self, patient_id: str, sensor_id: str) -> datetime | None:
        series = self._work.get((patient_id, sensor_id)) if self._cache else None
        if series is not None and series.rows:
            return series.rows[-1].device_time
        self._flush_pending()
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
