"""A reading backfilled into a reported gap is stored and announced like any other, with
the shorter gap it now closes as an event of its own."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from services.cgm_ingestion.events import EVENTS_TOPIC
from services.cgm_ingestion.main import TimeOrderedRunner
from services.cgm_ingestion.repository import readings
from services.runtime.outbox import outbox_events
from tests.cgm_ingestion.test_batch_path import _counts, _envelope, runner

__all__ = ["runner"]


def test_backfill_inside_a_gap_is_stored_and_both_gaps_are_announced(
    runner: TimeOrderedRunner, tmp_path: Path
) -> None:
    runner._handle_batch([_envelope(0, 100), _envelope(40, 110)])  # a 40-min gap from 0
    runner._handle_batch([_envelope(20, 105)])  # arrives late: a 20-min gap from 0
    stored, published = _counts(runner)
    assert stored == 3
    assert len(published) == 3
    with runner._sessions() as session:
        gap_ids = list(
            session.execute(
                select(outbox_events.c.event_id).where(outbox_events.c.topic == EVENTS_TOPIC)
            ).scalars()
        )
        backfilled = session.execute(
            select(readings.c.backfilled).order_by(readings.c.device_time_us)
        ).scalars()
        assert list(backfilled) == [False, True, False]  # in time order: 0, 20, 40
    assert len(gap_ids) == len(set(gap_ids)) == 2
