"""The dedupe table on its storage: what is marked is found, a duplicate fails, pruning works.

On SQLite the statements bypass SQLAlchemy's parameter processing (speed); the rows must be
the ones SQLAlchemy itself would store, or pruning by time and mixed writers would disagree.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from services.runtime.db import create_service_engine
from services.runtime.kafka import dedupe

AT = datetime(2026, 3, 1, 8, 30, 15, 123456, tzinfo=UTC)


def test_marked_ids_are_found_duplicates_fail_and_old_ids_are_pruned(
    database_url: str, unique_service: str
) -> None:
    engine = create_service_engine(unique_service, database_url)
    dedupe.create_tables(engine)
    sessions = sessionmaker(engine)
    try:
        with sessions() as session, session.begin():
            dedupe.mark_processed(
                session, "g1", [("e1", "t.v1", 0, 5), ("e2", "t.v1", 1, 7)], outcome="handled",
                processed_at=AT,
            )  # fmt: skip
            # The same rows as SQLAlchemy's own insert would store (another group).
            session.execute(
                dedupe.processed_events.insert(),
                {"consumer_group": "g2", "event_id": "e1", "topic": "t.v1",
                 "kafka_partition": 0, "kafka_offset": 5, "outcome": "handled",
                 "processed_at": AT},
            )  # fmt: skip
        with sessions() as session:
            assert dedupe.already_processed(session, "g1", ["e1", "e2", "e3"]) == {"e1", "e2"}
            assert dedupe.already_processed(session, "g2", ["e1", "e2"]) == {"e1"}
            stored = session.execute(
                select(dedupe.processed_events).order_by(
                    dedupe.processed_events.c.consumer_group, dedupe.processed_events.c.event_id
                )
            ).all()
            assert [tuple(row)[:6] for row in stored] == [
                ("g1", "e1", "t.v1", 0, 5, "handled"),
                ("g1", "e2", "t.v1", 1, 7, "handled"),
                ("g2", "e1", "t.v1", 0, 5, "handled"),
            ]
            assert len({row.processed_at for row in stored}) == 1
            if engine.dialect.name == "sqlite":
                raw = session.execute(text("SELECT DISTINCT processed_at FROM processed_events"))
                assert len(raw.all()) == 1  # byte-identical text, not just equal datetimes
        with pytest.raises(IntegrityError), sessions() as session, session.begin():
            dedupe.mark_processed(
                session, "g1", [("e2", "t.v1", 1, 7)], outcome="handled", processed_at=AT
            )
        with sessions() as session, session.begin():
            assert dedupe.prune_processed(session, AT - timedelta(seconds=1)) == 0
            assert dedupe.prune_processed(session, AT + timedelta(seconds=1)) == 3
    finally:
        engine.dispose()
