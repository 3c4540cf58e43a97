"""The alerts consumer's poll-batch path sees and stores exactly what one-by-one handling does."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from langerhans.cgm.v1 import cgm_pb2
from sqlalchemy import select

from services.alerts.events import ALERTS_TOPIC, AlertTopics, make_handler
from services.alerts.main import BatchRunner
from services.alerts.model import AlertKind
from services.alerts.repository import AlertRepository, alerts
from services.runtime.clock import FixedClock
from services.runtime.kafka.consumer import RunnerConfig
from services.runtime.kafka.envelope import Envelope, new_envelope
from services.runtime.outbox import outbox_events
from tests.alerts.helpers import make_engine

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
_offsets = iter(range(1_000_000))


def _reading(patient: str, minute: int, glucose_mg_dl: float) -> Envelope:
    message = cgm_pb2.CgmReading(patient_id=patient, glucose_mg_dl=glucose_mg_dl)
    message.measured_at.FromDatetime(T0 + timedelta(minutes=minute))
    envelope = new_envelope(patient, message, source="test", time=T0)
    return envelope.with_position("readings", 0, next(_offsets))


def test_lows_in_one_batch_raise_one_alert_per_person_and_a_later_batch_resolves_it(
    tmp_path: Path,
) -> None:
    _engine, sessions = make_engine(tmp_path)
    clock = FixedClock(T0 + timedelta(minutes=10))
    handler = make_handler(clock, AlertTopics())
    config = RunnerConfig(group_id="g", topics=["readings"], bootstrap_servers="unused")
    runner = BatchRunner(config, handler, sessions, clock=FixedClock(T0))
    runner.batch_handler = handler

    # Three urgent lows of p1 and normal readings of p2 in one transaction.
    runner._handle_batch(
        [_reading("p1", m, 48) for m in (0, 5, 10)] + [_reading("p2", m, 120) for m in (0, 5)]
    )
    with sessions() as session:
        repository = AlertRepository(session)
        assert set(repository.open_alerts("p1")) >= {AlertKind.URGENT_LOW}
        assert AlertKind.URGENT_LOW not in repository.open_alerts("p2")
        p1 = repository.load_state("p1")
        p2 = repository.load_state("p2")
        raised = list(
            session.execute(
                select(outbox_events.c.key).where(outbox_events.c.topic == ALERTS_TOPIC)
            ).scalars()
        )
        urgent = session.execute(
            select(alerts.c.alert_id).where(
                alerts.c.patient_id == "p1", alerts.c.kind == AlertKind.URGENT_LOW.value
            )
        ).all()
    assert len(urgent) == 1  # raised once, not once per low reading
    assert raised.count("p2") == 0
    assert p1 is not None
    assert p2 is not None
    assert len(p1.glucose) == 3
    assert len(p2.glucose) == 2

    # Recovered: the next batch resolves it.
    clock.advance(15 * 60)
    runner._handle_batch([_reading("p1", m, 140) for m in (15, 20, 25)])
    with sessions() as session:
        assert AlertKind.URGENT_LOW not in AlertRepository(session).open_alerts("p1")
        state = AlertRepository(session).load_state("p1")
    assert state is not None
    assert len(state.glucose) == 6


def test_a_state_changed_by_another_writer_is_read_again_not_taken_from_the_cache(
    tmp_path: Path,
) -> None:
    """The consumer reuses the person states it committed; a write by anyone else (the
    scheduler, the gRPC API, another process) must win over that cache."""
    _engine, sessions = make_engine(tmp_path)
    clock = FixedClock(T0 + timedelta(minutes=10))
    handler = make_handler(clock, AlertTopics())
    config = RunnerConfig(group_id="g", topics=["readings"], bootstrap_servers="unused")
    runner = BatchRunner(config, handler, sessions, clock=FixedClock(T0))
    runner.batch_handler = handler

    runner._handle_batch([_reading("p1", m, 120) for m in (0, 5)])
    # Another writer replaces the stored state: one reading only, and a low reservoir.
    with sessions() as session, session.begin():
        repository = AlertRepository(session)
        state = repository.load_state("p1")
        assert state is not None
        state.glucose = state.glucose[:1]
        state.reservoir_u = 3.0
        repository.save_state(state, clock.now())

    runner._handle_batch([_reading("p1", 10, 121), _reading("p2", 10, 130)])
    with sessions() as session:
        repository = AlertRepository(session)
        stored = repository.load_state("p1")
        kinds = set(repository.open_alerts("p1"))
    assert stored is not None
    assert [g.glucose_mg_dl for g in stored.glucose] == [120, 121]  # the other writer's state
    assert stored.reservoir_u == 3.0
    assert AlertKind.RESERVOIR_VERY_LOW in kinds

    # Unchanged since the consumer's own commit: the next batch continues from it.
    runner._handle_batch([_reading("p1", 15, 122)])
    with sessions() as session:
        again = AlertRepository(session).load_state("p1")
    assert again is not None
    assert [g.glucose_mg_dl for g in again.glucose] == [120, 121, 122]
