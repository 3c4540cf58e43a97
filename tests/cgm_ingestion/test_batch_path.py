"""The poll-batch path (multi-row inserts) keeps dedupe and outbox guarantees."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from services.cgm_ingestion.events import READINGS_TOPIC, handle_raw, make_handler, reading_id
from services.cgm_ingestion.main import CgmIngestionSettings, TimeOrderedRunner, build
from services.cgm_ingestion.repository import SeriesCache, readings
from services.runtime.clock import FixedClock
from services.runtime.kafka.consumer import RunnerConfig
from services.runtime.kafka.envelope import Envelope, new_envelope
from services.runtime.outbox import outbox_events

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
_offsets = iter(range(1_000_000))


def _envelope(minute: int, value: float, now: datetime = NOW) -> Envelope:
    """Reading `minute` of the hour before `now` (value in mg/dL) as a consumed record."""
    message = cgm_pb2.RawCgmReading(
        patient_id="p1",
        sensor_id="s1",
        glucose=common_pb2.GlucoseQuantity(value=value, unit=common_pb2.GLUCOSE_UNIT_MG_DL),
        sensor_age_min=3 * 1440,
    )
    message.measured_at.FromDatetime(now - timedelta(minutes=60 - minute))
    envelope = new_envelope("p1", message, source="test", time=now)
    return envelope.with_position("raw", 0, next(_offsets))


def make_runner(tmp_path: Path, now: datetime = NOW) -> TimeOrderedRunner:
    """The batch runner on a SQLite file, its clock fixed at `now`."""
    settings = CgmIngestionSettings(
        database_url=f"sqlite:///{tmp_path / 'cgm.sqlite3'}", kafka_bootstrap_servers="unused"
    )
    _, sessions = build(settings)
    cache = SeriesCache()
    handler = make_handler(FixedClock(now), cache=cache)
    config = RunnerConfig(
        group_id="g", topics=["raw"], bootstrap_servers="unused", transaction_batch=100
    )
    built = TimeOrderedRunner(config, handler, sessions, clock=FixedClock(now))
    built.cache = cache
    built.raw_handler = handler
    return built


@pytest.fixture
def runner(tmp_path: Path) -> TimeOrderedRunner:
    return make_runner(tmp_path)


def _counts(runner: TimeOrderedRunner) -> tuple[int, list[str]]:
    with runner._sessions() as session:
        stored = session.execute(select(func.count()).select_from(readings)).scalar_one()
        published = list(
            session.execute(
                select(outbox_events.c.event_id)
                .where(outbox_events.c.topic == READINGS_TOPIC)
                .order_by(outbox_events.c.id)
            ).scalars()
        )
    return int(stored), published


def test_batch_stores_and_announces_each_reading_once_in_time_order(
    runner: TimeOrderedRunner,
) -> None:
    # Arrival order shuffled, one duplicate: stored once each, announced in time order.
    batch = [_envelope(m, 100 + m) for m in (10, 0, 5, 20, 15)] + [_envelope(5, 105)]
    runner._handle_batch(batch)
    stored, published = _counts(runner)
    assert stored == 5
    assert len(published) == len(set(published)) == 5
    with runner._sessions() as session:
        in_time_order = session.execute(
            select(readings.c.identity).order_by(readings.c.device_time_us)
        ).scalars()
        assert published == [reading_id(identity) for identity in in_time_order]


def test_reading_stored_behind_the_cache_rolls_the_batch_back_then_counts_as_duplicate(
    runner: TimeOrderedRunner,
) -> None:
    runner._handle_batch([_envelope(m, 120) for m in (0, 5, 10)])
    # Another member (after a rebalance) stored the 15-minute reading: this cache missed it.
    with runner._sessions() as session, session.begin():
        handle_raw(_envelope(15, 121), session, FixedClock(NOW), "UTC")
    late = [_envelope(15, 121), _envelope(20, 122)]
    with pytest.raises(IntegrityError):
        runner._handle_batch(late)
    assert _counts(runner)[0] == 4  # nothing of the failed batch was kept
    # The runner then handles the records one by one: duplicate skipped, new one stored.
    for envelope in late:
        runner._handle_once(envelope)
    stored, published = _counts(runner)
    assert stored == 5
    assert len(published) == len(set(published)) == 5
