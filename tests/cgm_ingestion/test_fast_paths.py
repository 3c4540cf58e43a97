"""The handler's shortcuts give exactly what the plain calls give: device times from
protobuf Timestamps, readings built without the dataclass constructor, and the series
window's times and values next to its rows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2
from sqlalchemy.orm import Session, sessionmaker

from services.cgm_ingestion.assessment import Fault, Trend
from services.cgm_ingestion.events import raw_from_proto
from services.cgm_ingestion.readings import RangeFlag, RawReading, ValidReading, validate
from services.cgm_ingestion.repository import (
    PendingWrites,
    ReadingRepository,
    SeriesCache,
    metadata,
)
from services.cgm_ingestion.service import StoredReading
from services.runtime import migrations
from services.runtime.db import create_service_engine

MIN_S, MAX_S = -62_135_596_800, 253_402_300_799


@settings(max_examples=400, deadline=None)
@given(
    seconds=st.one_of(
        st.integers(MIN_S - 10, MAX_S + 10),
        st.sampled_from([MIN_S, MAX_S, 0, -1, 1_764_115_200]),
        st.integers(-(2**63), 2**63 - 1),
    ),
    nanos=st.one_of(st.integers(-(2**31), 2**31 - 1), st.sampled_from([0, 999, 1000, 999_999_999])),
)
def test_device_time_is_to_datetime_or_none(seconds: int, nanos: int) -> None:
    message = cgm_pb2.RawCgmReading(patient_id="p", sensor_id="s")
    message.measured_at.seconds = seconds
    message.measured_at.nanos = nanos
    try:
        expected: datetime | None = message.measured_at.ToDatetime(UTC)
    except ValueError:
        expected = None
    got = raw_from_proto(message).device_time
    assert got == expected
    if got is not None and expected is not None:
        assert got.tzinfo is expected.tzinfo


def test_raw_and_valid_readings_equal_the_constructed_ones() -> None:
    at = datetime(2026, 11, 26, 1, 2, 3, 456789, tzinfo=UTC)
    message = cgm_pb2.RawCgmReading(
        patient_id="p",
        sensor_id="s",
        glucose=common_pb2.GlucoseQuantity(value=6.2, unit=common_pb2.GLUCOSE_UNIT_MMOL_L),
        sensor_age_min=90,
    )
    message.measured_at.FromDatetime(at)
    raw = raw_from_proto(message, "e1")
    assert raw == RawReading("p", "s", at, 6.2, "mmol/L", at - timedelta(minutes=90), "e1")
    valid = validate(raw, at + timedelta(minutes=1))
    assert isinstance(valid, ValidReading)
    assert valid == ValidReading(
        valid.patient_id,
        valid.sensor_id,
        at,
        112,
        RangeFlag.IN_RANGE,
        valid.identity,
        at - timedelta(minutes=90),
    )


def _reading(at: datetime, value: int) -> StoredReading:
    return StoredReading(
        patient_id="p",
        sensor_id="s",
        device_time=at,
        glucose_mg_dl=value,
        range_flag=RangeFlag.IN_RANGE,
        identity=f"id-{at.timestamp()}",
        trend=Trend.FLAT,
        rate_mg_dl_per_min=0.5,
        noise_level=1,
        faults=frozenset({Fault.JUMP}),
        quality=90,
        received_at=at,
    )


def test_stored_reading_new_equals_the_constructor() -> None:
    at = datetime(2026, 11, 26, 1, 2, 3, 456789, tzinfo=UTC)
    built = _reading(at, 120)
    fast = StoredReading.new(
        "p",
        "s",
        at,
        120,
        RangeFlag.IN_RANGE,
        built.identity,
        Trend.FLAT,
        0.5,
        1,
        frozenset({Fault.JUMP}),
        90,
        at,
        False,
        None,
        at.timestamp(),
    )
    assert fast == built
    assert repr(fast) == repr(built)
    assert fast.time_s() == built.time_s() == at.timestamp()


def test_window_times_and_values_follow_the_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cgm.sqlite3'}"
    migrations.upgrade("cgm-ingestion", database_url=url, target_metadata=metadata)
    with sessionmaker(create_service_engine("cgm-ingestion", url))() as session:
        session.begin()
        _check_window(session)


def _check_window(session: Session) -> None:
    repository = ReadingRepository(session, SeriesCache())
    PendingWrites.start(session)
    start = datetime(2026, 11, 26, 0, 0, 0, 123457, tzinfo=UTC)
    us = round(start.timestamp() * 1_000_000)
    # The (empty) series is loaded first: the readings then go into the cached lists, out of
    # order, which keep rows, times and values sorted together.
    assert repository.window("p", "s", us, us + 30 * 60 * 1_000_000) == ([], [], [])
    for step in (3, 0, 2, 5, 1, 4):
        assert repository.add(_reading(start + timedelta(minutes=5 * step), 100 + step))
    window = repository.window("p", "s", us, us + 30 * 60 * 1_000_000)
    assert window is not None
    rows, times_s, values = window
    assert [r.device_time for r in rows] == [start + timedelta(minutes=5 * n) for n in range(6)]
    assert times_s == [r.device_time.timestamp() for r in rows]
    assert values == [float(r.glucose_mg_dl) for r in rows]
    assert rows == repository.series("p", "s", start, start + timedelta(minutes=30))
