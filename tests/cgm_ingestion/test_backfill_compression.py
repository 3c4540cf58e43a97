"""A reading backfilled into a compression low that was already reported is stored and
announced like any other; the episode is reported once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2
from sqlalchemy import func, select

from services.cgm_ingestion.events import EVENTS_TOPIC, READINGS_TOPIC, make_handler
from services.cgm_ingestion.main import CgmIngestionSettings, TimeOrderedRunner, build
from services.cgm_ingestion.repository import SeriesCache, readings
from services.runtime.clock import FixedClock
from services.runtime.kafka.consumer import RunnerConfig
from services.runtime.kafka.envelope import Envelope, new_envelope
from services.runtime.outbox import outbox_events

NIGHT = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # compression lows are looked for at night
_offsets = iter(range(1_000_000))


def _envelope(minute: int, glucose_mg_dl: float) -> Envelope:
    message = cgm_pb2.RawCgmReading(
        patient_id="p1",
        sensor_id="s1",
        glucose=common_pb2.GlucoseQuantity(value=glucose_mg_dl, unit=common_pb2.GLUCOSE_UNIT_MG_DL),
        sensor_age_min=3 * 1440,
    )
    message.measured_at.FromDatetime(NIGHT - timedelta(minutes=60 - minute))
    envelope = new_envelope("p1", message, source="test", time=NIGHT)
    return envelope.with_position("raw", 0, next(_offsets))


@pytest.fixture
def runner(tmp_path: Path) -> TimeOrderedRunner:
    settings = CgmIngestionSettings(
        database_url=f"sqlite:///{tmp_path / 'cgm.sqlite3'}", kafka_bootstrap_servers="unused"
    )
    _, sessions = build(settings)
    handler = make_handler(FixedClock(NIGHT), cache=SeriesCache())
    config = RunnerConfig(
        group_id="g", topics=["raw"], bootstrap_servers="unused", transaction_batch=100
    )
    return TimeOrderedRunner(config, handler, sessions, clock=FixedClock(NIGHT))


def test_backfill_that_completes_a_reported_compression_low_again_is_stored(
    runner: TimeOrderedRunner,
) -> None:
    # stable ~120, a fast drop to 60 and back: the reading at 45 min completes the recovery
    # (35 min reads 70, 40 min has not arrived yet)
    first = [(0, 118), (5, 119), (10, 120), (15, 120), (20, 120), (25, 80), (30, 60), (35, 70)]
    first.append((45, 118))
    runner._handle_batch([_envelope(m, g) for m, g in first])
    # 40 min arrives late and recovers too: the same episode (same start), found a second time
    runner._handle_batch([_envelope(40, 116)])
    with runner._sessions() as session:
        stored = session.execute(select(func.count()).select_from(readings)).scalar_one()
        published = session.execute(
            select(func.count())
            .select_from(outbox_events)
            .where(outbox_events.c.topic == READINGS_TOPIC)
        ).scalar_one()
        events = session.execute(
            select(outbox_events.c.payload).where(outbox_events.c.topic == EVENTS_TOPIC)
        ).scalars()
        episodes = [
            m.sensor_fault_detected.detail
            for m in (cgm_pb2.CgmEvent.FromString(p) for p in events)
            if m.sensor_fault_detected.fault == cgm_pb2.SENSOR_FAULT_COMPRESSION_LOW
            and "recovery" in m.sensor_fault_detected.detail
        ]
    assert stored == published == len(first) + 1  # the late reading is not dead-lettered
    assert episodes == ["drop 119 → 60 mg/dL and recovery"]  # reported once
