"""A reading backfilled into a compression low that was already reported is stored and
announced like any other; the episode is reported once."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from langerhans.cgm.v1 import cgm_pb2
from sqlalchemy import func, select

from services.cgm_ingestion.events import EVENTS_TOPIC, READINGS_TOPIC
from services.cgm_ingestion.main import TimeOrderedRunner
from services.cgm_ingestion.repository import readings
from services.runtime.kafka.envelope import Envelope
from services.runtime.outbox import outbox_events
from tests.cgm_ingestion.test_batch_path import _envelope, make_runner

NIGHT = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)  # compression lows are looked for at night


def _at_night(minute: int, glucose_mg_dl: float) -> Envelope:
    return _envelope(minute, glucose_mg_dl, now=NIGHT)


@pytest.fixture
def runner(tmp_path: Path) -> TimeOrderedRunner:
    return make_runner(tmp_path, now=NIGHT)


def test_backfill_that_completes_a_reported_compression_low_again_is_stored(
    runner: TimeOrderedRunner,
) -> None:
    # stable ~120, a fast drop to 60 and back: the reading at 45 min completes the recovery
    # (35 min reads 70, 40 min has not arrived yet)
    first = [(0, 118), (5, 119), (10, 120), (15, 120), (20, 120), (25, 80), (30, 60), (35, 70)]
    first.append((45, 118))
    runner._handle_batch([_at_night(m, g) for m, g in first])
    # 40 min arrives late and recovers too: the same episode (same start), found a second time
    runner._handle_batch([_at_night(40, 116)])
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
