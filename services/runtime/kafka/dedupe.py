"""The processed-events table: what makes at-least-once delivery harmless.

Each consuming service keeps this table in its own schema. A handler's state change and the
row for the event id commit in one transaction, so an event is either fully handled once or
not at all; a re-delivered event finds its row and is skipped. The primary key also stops a
"zombie" consumer (one that lost its partitions in a rebalance but is still mid-handler) from
committing the same event twice: its insert fails and its transaction rolls back.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    delete,
    select,
)
from sqlalchemy.orm import Session

from services.runtime.db import new_metadata

__all__ = [
    "already_processed",
    "create_tables",
    "include_in",
    "mark_processed",
    "metadata",
    "processed_events",
    "prune_processed",
]

metadata = new_metadata()

processed_events = Table(
    "processed_events",
    metadata,
    Column("consumer_group", String(200), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("topic", String(249), nullable=False),
    Column("kafka_partition", Integer, nullable=False),
    Column("kafka_offset", BigInteger, nullable=False),
    # "handled" or "dead_lettered"
    Column("outcome", String(20), nullable=False),
    Column("processed_at", DateTime(timezone=True), nullable=False, index=True),
)


def include_in(target: MetaData) -> None:
    """Copy the backbone's tables into a service's metadata (for its Alembic migrations)."""
    from services.runtime import outbox

    for table in (processed_events, outbox.outbox_events):
        if table.name not in target.tables:
            table.to_metadata(target)


def create_tables(engine: Engine) -> None:
    """Create the processed-events and outbox tables if missing (until migrations own them)."""
    from services.runtime import outbox

    metadata.create_all(engine)
    outbox.metadata.create_all(engine)


def already_processed(session: Session, group: str, event_ids: Iterable[str]) -> set[str]:
    """The subset of `event_ids` that `group` has already handled (or dead-lettered)."""
    ids = list(event_ids)
    found: set[str] = set()
    # Bounded IN lists: SQLite allows 32k parameters, PostgreSQL more; keep it modest.
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        rows = session.execute(
            select(processed_events.c.event_id).where(
                processed_events.c.consumer_group == group,
                processed_events.c.event_id.in_(chunk),
            )
        )
        found.update(row[0] for row in rows)
    return found


def mark_processed(
    session: Session,
    group: str,
    rows: Iterable[tuple[str, str, int, int]],
    *,
    outcome: str,
    processed_at: datetime,
) -> None:
    """Insert (event_id, topic, partition, offset) rows; flushes so a duplicate fails now."""
    values = [
        {
            "consumer_group": group,
            "event_id": event_id,
            "topic": topic,
            "kafka_partition": partition,
            "kafka_offset": offset,
            "outcome": outcome,
            "processed_at": processed_at,
        }
        for event_id, topic, partition, offset in rows
    ]
    if values:
        session.execute(processed_events.insert(), values)


def prune_processed(session: Session, older_than: datetime) -> int:
    """Forget ids older than the topics' retention (they can no longer be re-delivered)."""
    result = session.execute(
        delete(processed_events).where(processed_events.c.processed_at < older_than)
    )
    return int(getattr(result, "rowcount", 0) or 0)
