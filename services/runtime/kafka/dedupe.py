"""The processed-events table: what makes at-least-once delivery harmless.

Each consuming service keeps this table in its own schema. A handler's state change and the
row for the event id commit in one transaction, so an event is either fully handled once or
not at all; a re-delivered event finds its row and is skipped. The primary key also stops a
"zombie" consumer (one that lost its partitions in a rebalance but is still mid-handler) from
committing the same event twice: its insert fails and its transaction rolls back.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any

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
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.runtime.db import new_metadata, sqlite_driver

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
    raw = sqlite_driver(session) if ids else None
    # Bounded IN lists: SQLite allows 32k parameters, PostgreSQL more; keep it modest.
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        if raw is not None:
            marks = ",".join("?" * len(chunk))  # placeholders only; values are bound
            rows: Any = raw.execute(
                "SELECT event_id FROM processed_events"  # noqa: S608
                f" WHERE consumer_group = ? AND event_id IN ({marks})",
                (group, *chunk),
            )
        else:
            rows = session.execute(
                select(processed_events.c.event_id).where(
                    processed_events.c.consumer_group == group,
                    processed_events.c.event_id.in_(chunk),
                )
            )
        found.update(row[0] for row in rows)
    return found


_SQLITE_INSERT = (
    "INSERT INTO processed_events (consumer_group, event_id, topic, kafka_partition,"
    " kafka_offset, outcome, processed_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def mark_processed(
    session: Session,
    group: str,
    rows: Iterable[tuple[str, str, int, int]],
    *,
    outcome: str,
    processed_at: datetime,
) -> None:
    """Insert (event_id, topic, partition, offset) rows; a duplicate fails now (IntegrityError)."""
    rows = list(rows)
    if not rows:
        return
    raw = sqlite_driver(session)
    if raw is not None:
        # Stored exactly as SQLAlchemy stores this column (its own bind processor, once).
        dialect = session.get_bind().dialect
        to_db = processed_events.c.processed_at.type.dialect_impl(dialect).bind_processor(dialect)
        at = to_db(processed_at) if to_db is not None else processed_at
        try:
            raw.executemany(
                _SQLITE_INSERT,
                [(group, event_id, topic, p, o, outcome, at) for event_id, topic, p, o in rows],
            )
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(_SQLITE_INSERT, None, exc) from exc
        return
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
    session.execute(processed_events.insert(), values)


def prune_processed(session: Session, older_than: datetime) -> int:
    """Forget ids older than the topics' retention (they can no longer be re-delivered)."""
    result = session.execute(
        delete(processed_events).where(processed_events.c.processed_at < older_than)
    )
    return int(getattr(result, "rowcount", 0) or 0)
