"""Transactional outbox: a state change and the event announcing it cannot diverge.

Application code writes the event into the `outbox_events` table in the SAME transaction as
its state change (`add(session, topic, key, event)`); it never publishes directly. The relay
reads committed rows in insertion order, publishes them with the idempotent producer, waits
for the broker's acknowledgement and only then marks them published. A crash before the
mark means the row is published again after restart with the same stored event id, which
consumers dedupe on: at-least-once, never lost, never an event for a rolled-back change.

Hand-off (`OutboxRelay.attach(session_factory)`, SQLite batch path): after a transaction
commits, the rows it inserted go to the relay in memory, which publishes them without reading
them back; it marks them in the writer's next transaction (or its own after `mark_interval_s`).
The scan of unpublished rows stays: at start, after a failed publish, whenever the handed ids
do not follow the last known id (a row written another way), and when idle.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    delete,
    func,
    select,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.runtime.clock import Clock, SystemClock
from services.runtime.db import new_metadata, sqlite_driver
from services.runtime.fast_init import without_init
from services.runtime.kafka.envelope import Envelope, ProtoMessage, new_envelope
from services.runtime.kafka.metrics import OUTBOX_PENDING, OUTBOX_PUBLISHED
from services.runtime.kafka.producer import EventProducer

__all__ = [
    "OutboxRelay",
    "OutboxRow",
    "add",
    "batch_inserts",
    "create_tables",
    "flush_batch",
    "holds_event",
    "include_in",
    "metadata",
    "outbox_events",
    "pending_count",
    "pending_rows",
    "purge_published",
]

log = logging.getLogger(__name__)
# Seconds between recounts of the pending-rows gauge by a running relay.
GAUGE_INTERVAL_S = 1.0

metadata = new_metadata()

outbox_events = Table(
    "outbox_events",
    metadata,
    # INTEGER PRIMARY KEY on SQLite is the rowid: monotonically increasing in commit order.
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("topic", String(249), nullable=False),
    Column("key", String(200), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("source", String(200), nullable=False),
    Column("event_time", DateTime(timezone=True), nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("published_at", DateTime(timezone=True), nullable=True, index=True),
)


def include_in(target: MetaData) -> None:
    """Copy the outbox table into a service's metadata (for its Alembic migrations)."""
    if outbox_events.name not in target.tables:
        outbox_events.to_metadata(target)


def create_tables(engine: Engine) -> None:
    metadata.create_all(engine)


# Compiled once: building `insert().values(...)` per event costs more than executing it.
_INSERT = outbox_events.insert()
_BATCH_KEY = "langerhans_outbox_batch"
# On SQLite the batch insert and the relay's read go straight to the driver (as the dedupe
# rows do): SQLAlchemy's per-row parameter and result processing cost more CPU than SQLite.
_COLUMNS = (
    "event_id",
    "topic",
    "key",
    "event_type",
    "source",
    "event_time",
    "content_type",
    "payload",
    "created_at",
)
_SQLITE_INSERT = (
    f"INSERT INTO outbox_events ({', '.join(_COLUMNS)})"  # noqa: S608 (constant names)
    f" VALUES ({', '.join('?' * len(_COLUMNS))})"
)
_SQLITE_PENDING = (
    "SELECT id, event_id, topic, key, event_type, source, event_time, content_type, payload"
    " FROM outbox_events WHERE published_at IS NULL ORDER BY id LIMIT ?"
)


_SQLITE_MAX_ID = "SELECT max(id) FROM outbox_events"
_SQLITE_MARK_RANGE = "UPDATE outbox_events SET published_at = ? WHERE id BETWEEN ? AND ?"
_SQLITE_PENDING_IDS = "SELECT id FROM outbox_events WHERE published_at IS NULL ORDER BY id LIMIT ?"
_HANDOFF_KEY = "langerhans_outbox_handoff"


def _time_to_db(session: Session) -> Callable[[datetime], Any]:
    """How SQLAlchemy stores an outbox time on this dialect (its own bind processor)."""
    dialect = session.get_bind().dialect
    to_db = outbox_events.c.event_time.type.dialect_impl(dialect).bind_processor(dialect)
    return to_db if to_db is not None else (lambda value: value)


def _time_from_db(session: Session) -> Callable[[Any], datetime]:
    """How SQLAlchemy reads an outbox time back on this dialect (its own result processor)."""
    dialect = session.get_bind().dialect
    impl = outbox_events.c.event_time.type.dialect_impl(dialect)
    from_db = impl.result_processor(dialect, None)
    if from_db is None:
        return lambda value: value
    return from_db  # type: ignore[return-value]


class _Batch:
    """Outbox rows of one transaction waiting for its commit (see `batch_inserts`)."""

    def __init__(self, session: Session) -> None:
        self.active = False
        self.rows: list[dict[str, object]] = []
        # With a relay attached: rows inserted (with their ids) to hand over after the
        # commit, ids of published rows this transaction marks, and whether a row went in
        # without its id (the relay then scans).
        self.relay: OutboxRelay | None = session.info.get(_HANDOFF_KEY)
        self.envelopes: list[Envelope] = []  # of `rows`, as `add` returned them
        self.inserted: list[OutboxRow] = []
        self.marking: list[int] = []
        self.unhanded = False
        self.announced = False  # told the relay a hand-off follows this commit
        sa_event.listen(session, "before_commit", self._before_commit)
        sa_event.listen(session, "after_commit", self._after_commit)
        sa_event.listen(session, "after_rollback", self._after_rollback)

    def flush(self, session: Session) -> None:
        if not self.rows:
            return
        rows, self.rows = self.rows, []
        raw = sqlite_driver(session)
        if raw is None:
            session.execute(_INSERT, rows)
            self.unhanded = self.relay is not None
            self.envelopes = []
            return
        to_db = _time_to_db(session)
        values = []
        for r in rows:
            event_time = to_db(r["event_time"])  # type: ignore[arg-type]
            # `add` stores one clock reading as both times: converted once.
            created_at = (
                event_time if r["created_at"] is r["event_time"] else to_db(r["created_at"])  # type: ignore[arg-type]
            )
            values.append(
                (
                    r["event_id"],
                    r["topic"],
                    r["key"],
                    r["event_type"],
                    r["source"],
                    event_time,
                    r["content_type"],
                    r["payload"],
                    created_at,
                )
            )
        try:
            if self.relay is None:
                raw.executemany(_SQLITE_INSERT, values)
            else:
                self._insert_handed(raw, rows, values, to_db, _time_from_db(session))
        except sqlite3.IntegrityError as exc:
            raise IntegrityError(_SQLITE_INSERT, None, exc) from exc

    def _insert_handed(
        self,
        raw: Any,
        rows: list[dict[str, object]],
        values: Sequence[tuple[object, ...]],
        to_db: Callable[[datetime], Any],
        from_db: Callable[[Any], datetime],
    ) -> None:
        """Insert and keep each row with its id, for the hand-off. The transaction holds the
        write lock (`BEGIN IMMEDIATE`), and without AUTOINCREMENT SQLite gives each new row
        the largest rowid + 1: the rows get top + 1 … top + n, which the last insert's rowid
        confirms (otherwise nothing is handed over and the relay scans)."""
        envelopes, self.envelopes = self.envelopes, []
        top = int(raw.execute(_SQLITE_MAX_ID).fetchone()[0] or 0)
        raw.executemany(_SQLITE_INSERT, values)
        last = raw.execute("SELECT last_insert_rowid()").fetchone()[0]
        if last != top + len(rows) or len(envelopes) != len(rows):
            self.unhanded = True
            return
        for offset, (r, added) in enumerate(zip(rows, envelopes, strict=True)):
            envelope = added
            if added.time.tzinfo is not UTC:
                # As the relay would read it back (SQLite stores times without a zone).
                at = _aware(from_db(to_db(added.time)))
                envelope = replace(added, time=at)
            self.inserted.append(  # once per row
                without_init(OutboxRow, id=top + 1 + offset, topic=r["topic"], envelope=envelope)
            )

    def _before_commit(self, session: Session) -> None:
        if self.active:
            self.flush(session)
        if self.relay is not None:
            # Published rows ride along in this transaction (no write transaction of
            # the relay's own); given back to the relay if it rolls back.
            self.marking = self.relay.take_marks()
            if self.marking:
                _mark(session, self.marking, self.relay.clock.now())
            if self.inserted:
                # Rows to hand over once the commit returns: the relay's idle scan would
                # otherwise find them committed first and read them back (seen with 2,000-row
                # transactions: the scan's 50 ms timer ran out during the commit's fsync).
                self.relay.handing_over(True)
                self.announced = True

    def _after_commit(self, _session: Session) -> None:
        relay, inserted, marking, unhanded = self.relay, self.inserted, self.marking, self.unhanded
        announced = self.announced
        self._reset()
        if relay is None:
            return
        if marking:
            relay.marks_committed(marking)
        if inserted:
            relay.hand_off(inserted)
        if announced:
            relay.handing_over(False)
        if unhanded:
            relay.wake()

    def _after_rollback(self, _session: Session) -> None:
        # After a rollback the rows must never reach a later commit of this session.
        relay, marking, announced = self.relay, self.marking, self.announced
        self._reset()
        if relay is not None and marking:
            relay.marks_failed(marking)
        if relay is not None and announced:
            relay.handing_over(False)

    def _reset(self) -> None:
        self.active = False
        self.rows = []
        self.envelopes = []
        self.inserted = []
        self.marking = []
        self.unhanded = False
        self.announced = False


def batch_inserts(session: Session) -> None:
    """Until the session's current transaction ends, `add` collects rows and inserts them with
    one multi-row statement just before the commit: still the same transaction (all or
    nothing), one statement instead of one per event on a batch path. Rows are not visible
    to queries of the transaction before that (`flush_batch` writes them at once)."""
    batch: _Batch | None = session.info.get(_BATCH_KEY)
    if batch is None:
        batch = session.info[_BATCH_KEY] = _Batch(session)
    batch.active = True


def flush_batch(session: Session) -> None:
    """Insert the rows `batch_inserts` collected so far (no-op without a batch)."""
    batch: _Batch | None = session.info.get(_BATCH_KEY)
    if batch is not None and batch.active:
        batch.flush(session)


def add(
    session: Session,
    topic: str,
    key: str,
    event: ProtoMessage | bytes,
    *,
    source: str,
    clock: Clock | None = None,
    event_type: str | None = None,
    event_id: str | None = None,
    extensions: Mapping[str, str] | None = None,
) -> Envelope:
    """Record `event` for `topic` in the caller's transaction (published after it commits).

    The event id is fixed here and stored, so every re-publication carries the same `ce_id`.
    """
    if extensions:
        raise ValueError("extension attributes are not stored by the outbox")
    now = (clock or SystemClock()).now()
    envelope = new_envelope(
        key, event, source=source, time=now, event_type=event_type, event_id=event_id
    )
    row: dict[str, object] = {
        "event_id": envelope.event_id,
        "topic": topic,
        "key": envelope.key,
        "event_type": envelope.event_type,
        "source": envelope.source,
        "event_time": envelope.time,
        "content_type": envelope.content_type,
        "payload": envelope.data,
        "created_at": now,
    }
    batch: _Batch | None = session.info.get(_BATCH_KEY)
    if batch is not None and batch.active:
        batch.rows.append(row)
        if batch.relay is not None:
            batch.envelopes.append(envelope)
        return envelope
    session.execute(_INSERT, row)
    if _HANDOFF_KEY in session.info:
        # Not handed over: the attached relay must scan after this commit.
        if batch is None:
            batch = session.info[_BATCH_KEY] = _Batch(session)
        batch.unhanded = True
    return envelope


def holds_event(session: Session, event_id: str) -> bool:
    """Whether an event with this id is in the outbox: added earlier in this transaction (also
    still waiting in a batch) or stored, published or not. Ids derived from what an event says
    make a second detection of the same thing the same event (consumers dedupe on the id; a
    second insert would fail the whole transaction on the unique id)."""
    batch: _Batch | None = session.info.get(_BATCH_KEY)
    if batch is not None and any(row["event_id"] == event_id for row in batch.rows):
        return True
    found = session.execute(
        select(outbox_events.c.id).where(outbox_events.c.event_id == event_id)
    ).first()
    return found is not None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    topic: str
    envelope: Envelope


def _aware(value: datetime) -> datetime:
    # SQLite returns naive datetimes; everything stored is UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def pending_rows(session: Session, limit: int) -> list[OutboxRow]:
    """The oldest unpublished rows, in insertion order."""
    raw = sqlite_driver(session)
    if raw is not None:
        from_db = _time_from_db(session)
        return [
            OutboxRow(
                id=row_id,
                topic=topic,
                envelope=Envelope(
                    event_id=event_id,
                    event_type=event_type,
                    source=source,
                    time=_aware(from_db(event_time)),
                    key=key,
                    data=bytes(payload),
                    content_type=content_type,
                ),
            )
            for (
                row_id,
                event_id,
                topic,
                key,
                event_type,
                source,
                event_time,
                content_type,
                payload,
            ) in raw.execute(_SQLITE_PENDING, (limit,))
        ]
    rows = session.execute(
        select(outbox_events)
        .where(outbox_events.c.published_at.is_(None))
        .order_by(outbox_events.c.id)
        .limit(limit)
    ).mappings()
    return [
        OutboxRow(
            id=row["id"],
            topic=row["topic"],
            envelope=Envelope(
                event_id=row["event_id"],
                event_type=row["event_type"],
                source=row["source"],
                time=_aware(row["event_time"]),
                key=row["key"],
                data=bytes(row["payload"]),
                content_type=row["content_type"],
            ),
        )
        for row in rows
    ]


def pending_count(session: Session) -> int:
    count = session.execute(
        select(func.count())
        .select_from(outbox_events)
        .where(outbox_events.c.published_at.is_(None))
    ).scalar_one()
    return int(count)


def purge_published(session: Session, older_than: datetime) -> int:
    """Delete rows published before `older_than` (keep them as long as consumers dedupe)."""
    result = session.execute(delete(outbox_events).where(outbox_events.c.published_at < older_than))
    return int(getattr(result, "rowcount", 0) or 0)


def _mark(session: Session, ids: Sequence[int], now: datetime) -> None:
    """Set `published_at` on rows `ids` in the session's transaction."""
    raw = sqlite_driver(session)
    if raw is not None:
        # Straight to the driver (a statement built per pass cost more than its run).
        at = _time_to_db(session)(now)
        ordered = sorted(ids)
        if ordered and ordered[-1] - ordered[0] == len(ordered) - 1 == len(set(ordered)) - 1:
            # One run of ids (a hand-off's rows): a range, not a list of 500 probes.
            raw.execute(_SQLITE_MARK_RANGE, (at, ordered[0], ordered[-1]))
            return
        for start in range(0, len(ids), 500):
            chunk = list(ids[start : start + 500])
            marks = ",".join("?" * len(chunk))  # placeholders only; values are bound
            raw.execute(
                f"UPDATE outbox_events SET published_at = ? WHERE id IN ({marks})",  # noqa: S608
                (at, *chunk),
            )
        return
    for start in range(0, len(ids), 500):
        chunk = list(ids[start : start + 500])
        session.execute(
            update(outbox_events).where(outbox_events.c.id.in_(chunk)).values(published_at=now)
        )


def _pending_ids(session: Session, limit: int) -> list[int]:
    raw = sqlite_driver(session)
    if raw is not None:
        return [row_id for (row_id,) in raw.execute(_SQLITE_PENDING_IDS, (limit,))]
    return list(
        session.scalars(
            select(outbox_events.c.id)
            .where(outbox_events.c.published_at.is_(None))
            .order_by(outbox_events.c.id)
            .limit(limit)
        )
    )


def _max_id(session: Session) -> int:
    raw = sqlite_driver(session)
    if raw is not None:
        value = raw.execute(_SQLITE_MAX_ID).fetchone()[0]
    else:
        value = session.execute(select(func.max(outbox_events.c.id))).scalar_one()
    return int(value or 0)


class OutboxRelay:
    """Publishes committed outbox rows in order; run one per service (a thread or process).

    Two relays on the same table would only publish some events twice (consumers dedupe).
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        producer: EventProducer,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 0.05,
        ack_timeout_s: float = 30.0,
        clock: Clock | None = None,
        read_session_factory: sessionmaker[Session] | None = None,
        mark_interval_s: float = 0.5,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be ≥ 1")
        self._sessions = session_factory
        # Pending rows are read here when given (a read-only SQLite engine: a WAL snapshot of
        # committed rows without the write lock, so a pass does not queue behind the
        # consumer's transaction twice); marking rows published always takes the lock.
        self._readers = read_session_factory or session_factory
        self._producer = producer
        self._batch_size = batch_size
        self._poll_interval_s = poll_interval_s
        self._ack_timeout_s = ack_timeout_s
        self._mark_interval_s = mark_interval_s
        self.clock = clock or SystemClock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        # Hand-off state (see `attach`), guarded by `_lock`.
        self._lock = threading.Lock()
        self._attached = False
        self._handed: list[OutboxRow] = []
        self._scan_due = True  # rows may be pending that were not handed over
        self._next_id: int | None = None  # the id a hand-off must start at to skip the scan
        self._acked: list[int] = []  # published, acknowledged, not yet in a mark
        self._acked_at_s = 0.0
        self._unmarked: set[int] = set()  # published by the relay, mark not yet committed
        self._handovers = 0  # writers between a commit with rows to hand over and the hand-off

    def attach(self, session_factory: sessionmaker[Session]) -> None:
        """Sessions of `session_factory` hand their committed batch rows (`batch_inserts`,
        SQLite) to this relay and carry its marks; the relay then publishes them without
        reading them back. Rows written otherwise are still found by the relay's scan."""
        info = dict(session_factory.kw.get("info") or {})
        info[_HANDOFF_KEY] = self
        session_factory.kw["info"] = info
        self._attached = True

    def hand_off(self, rows: list[OutboxRow]) -> None:
        """Rows of a just-committed transaction (called after its commit)."""
        with self._lock:
            self._handed.extend(rows)
        self._wake.set()

    def handing_over(self, started: bool) -> None:
        """A writer's commit with rows to hand over began (True) or ended (False): idle scans
        wait for the hand-off rather than read those rows back."""
        with self._lock:
            self._handovers += 1 if started else -1

    def take_marks(self) -> list[int]:
        """Acknowledged rows for a writer's transaction to mark (`marks_committed` or
        `marks_failed` follows)."""
        with self._lock:
            ids, self._acked = self._acked, []
        return ids

    def marks_committed(self, ids: Sequence[int]) -> None:
        with self._lock:
            self._unmarked.difference_update(ids)

    def marks_failed(self, ids: Sequence[int]) -> None:
        with self._lock:
            if not self._acked:
                self._acked_at_s = time.monotonic()
            self._acked.extend(ids)

    def publish_pending(self) -> int:
        """One pass: publish up to `batch_size` rows (handed over, else read), wait for acks,
        mark; returns rows published."""
        published = self._pass(scan=True)
        self.flush_marks()
        return published

    def _pass(self, *, scan: bool) -> int:
        """Publish handed rows when they follow the last known id, else (or when `scan`, or
        a scan is due) the oldest pending rows read from the database."""
        with self._lock:
            handed, self._handed = self._handed, []
            handed.sort(key=lambda row: row.id)
            direct = (
                bool(handed)
                and not self._scan_due
                and handed[0].id == self._next_id
                and handed[-1].id - handed[0].id == len(handed) - 1
            )
            if handed and not direct:
                # A row in between was not handed over (or the order is unknown): the scan
                # publishes everything pending in id order, these rows included.
                self._scan_due = True
            if direct:
                self._next_id = handed[-1].id + 1
            elif not (scan or self._scan_due):
                return 0
        if direct:
            rows = handed
        else:
            rows = self._scan()
            if not rows:
                return 0
        futures = [(row, self._producer.send_envelope(row.topic, row.envelope)) for row in rows]
        acknowledged: list[OutboxRow] = []
        for row, future in futures:
            try:
                future.get(timeout=self._ack_timeout_s)
            except Exception as exc:
                # Stop at the first failure; this and later rows stay pending; the scan
                # publishes them again.
                log.warning("outbox: publishing %s to %s failed: %s", row.id, row.topic, exc)
                with self._lock:
                    self._scan_due = True
                break
            acknowledged.append(row)
        if acknowledged:
            ids = [row.id for row in acknowledged]
            with self._lock:
                if not self._acked:
                    self._acked_at_s = time.monotonic()
                self._acked.extend(ids)
                self._unmarked.update(ids)
            per_topic: dict[str, int] = {}
            for row in acknowledged:
                per_topic[row.topic] = per_topic.get(row.topic, 0) + 1
            for topic, count in per_topic.items():  # a labels() lookup per topic, not per row
                OUTBOX_PUBLISHED.labels(topic).inc(count)
            if not self._attached:
                self.flush_marks()
        return len(acknowledged)

    def _scan(self) -> list[OutboxRow]:
        """The oldest pending rows not already published by this relay (marks in flight).

        Ids first (the published_at index alone): while the writer has not yet carried the
        marks, the rows just published are still pending and would be read for nothing."""
        with self._lock:
            excluded = set(self._unmarked)
        limit = self._batch_size + len(excluded)
        rows: list[OutboxRow] = []
        with self._readers() as session:
            # Rows up to `top` committed before the reads below, which see all pending ones.
            top = _max_id(session) if self._attached else 0
            ids = _pending_ids(session, limit)
            if any(row_id not in excluded for row_id in ids):
                read = pending_rows(session, limit)
                rows = [row for row in read if row.id not in excluded][: self._batch_size]
        with self._lock:
            if len(ids) < limit:
                # Caught up: hand-offs continue after the newest row known.
                top = max([top, *ids])
                self._next_id = top + 1
                self._scan_due = False
                self._handed = [row for row in self._handed if row.id > top]
            else:
                self._scan_due = True
        return rows

    def flush_marks(self) -> None:
        """Mark acknowledged rows not yet carried by a writer's transaction."""
        ids = self.take_marks()
        if not ids:
            return
        try:
            self.mark_published(ids)
        except BaseException:
            self.marks_failed(ids)
            raise
        self.marks_committed(ids)

    def mark_published(self, ids: Sequence[int]) -> None:
        """Mark rows as published (only after the broker acknowledged them)."""
        now = self.clock.now()
        with self._sessions() as session, session.begin():
            _mark(session, ids, now)

    def drain(self, timeout_s: float = 60.0) -> int:
        """Publish until nothing is pending (or `timeout_s`); returns rows published."""
        total = 0
        deadline = threading.Event()
        timer = threading.Timer(timeout_s, deadline.set)
        timer.start()
        try:
            while not deadline.is_set():
                published = self.publish_pending()
                total += published
                if published == 0:
                    with self._readers() as session:
                        if pending_count(session) == 0:
                            return total
                    deadline.wait(self._poll_interval_s)
        finally:
            timer.cancel()
        return total

    def wake(self) -> None:
        """Tell the relay thread that rows were just committed (skips the poll delay)."""
        with self._lock:
            self._scan_due = True
        self._wake.set()

    def run(self) -> None:
        """Publish until `stop()`; errors are logged and retried after a pause."""
        gauge_due_s = 0.0
        scan = True
        while not self._stop.is_set():
            try:
                if scan:
                    with self._lock:
                        scan = not self._handovers  # the hand-off is on its way
                published = self._pass(scan=scan)
                with self._lock:
                    marks_due = bool(self._acked) and (
                        time.monotonic() - self._acked_at_s >= self._mark_interval_s
                    )
                if marks_due:
                    self.flush_marks()
            except Exception:
                log.exception("outbox relay pass failed; retrying")
                published = 0
                with self._lock:
                    self._scan_due = True
                self._stop.wait(1.0)
            # The pending-rows gauge is a query of its own: at most once a second (counted
            # on every idle pass it was a second transaction per wake-up under a steady load).
            now_s = time.monotonic()
            if now_s >= gauge_due_s:
                gauge_due_s = now_s + GAUGE_INTERVAL_S
                self._update_pending_gauge()
            scan = False
            if published == 0:
                # Woken: rows were handed over (or `wake` asked for a scan); a quiet poll
                # interval: scan for rows written any other way. Marks no writer took are
                # due after `mark_interval_s`.
                timeout_s = self._poll_interval_s
                with self._lock:
                    if self._acked:
                        due_s = self._acked_at_s + self._mark_interval_s - time.monotonic()
                        timeout_s = min(timeout_s, max(due_s, 0.0))
                woken = self._wake.wait(timeout_s)
                self._wake.clear()
                scan = not woken and timeout_s == self._poll_interval_s
        try:
            self.flush_marks()
        except Exception as exc:
            log.warning("outbox: marking published rows at stop failed: %s", exc)

    def _update_pending_gauge(self) -> None:
        try:
            with self._readers() as session:
                OUTBOX_PENDING.set(pending_count(session))
        except Exception as exc:
            log.debug("outbox: pending count failed: %s", exc)

    def start(self) -> threading.Thread:
        self._thread = threading.Thread(target=self.run, name="outbox-relay", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
