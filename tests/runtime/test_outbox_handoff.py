"""Outbox hand-off: committed batch rows go to the relay in memory, the scan stays the net.

Unit tests of the relay with a recording producer (no broker): what is published, how often
the relay reads pending rows back, and what stays pending for the scan.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, select
from sqlalchemy.orm import Session, sessionmaker

from services.runtime import outbox
from services.runtime.db import create_service_engine, session_scope
from services.runtime.kafka import Envelope
from services.runtime.writer_lock import serialize_writers

state = Table(
    "handoff_state",
    MetaData(),
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("value", String(32), nullable=False),
)


class _Future:
    def __init__(self, error: Exception | None) -> None:
        self._error = error

    def get(self, timeout: float | None = None) -> None:
        if self._error is not None:
            raise self._error


class RecordingProducer:
    """Records each send; `fail_next` sends are not acknowledged (broker unreachable)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Envelope]] = []
        self.acked: list[str] = []
        self.fail_next = 0

    def send_envelope(self, topic: str, envelope: Envelope) -> _Future:
        self.sent.append((topic, envelope))
        if self.fail_next > 0:
            self.fail_next -= 1
            return _Future(RuntimeError("broker unreachable"))
        self.acked.append(envelope.event_id)
        return _Future(None)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    engine = create_service_engine("handoff-test", f"sqlite:///{tmp_path / 'db.sqlite3'}")
    outbox.create_tables(engine)
    state.create(engine)
    serialize_writers(engine)
    yield sessionmaker(engine, expire_on_commit=False)
    engine.dispose()


@pytest.fixture
def scans(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the relay's reads of pending rows (each call records its limit); reading the
    ids of pending rows (none, or only rows the relay published itself) is not counted."""
    calls: list[int] = []
    real = outbox.pending_rows

    def counted(session: Session, limit: int) -> list[outbox.OutboxRow]:
        calls.append(limit)
        return real(session, limit)

    monkeypatch.setattr(outbox, "pending_rows", counted)
    return calls


def _relay(
    sessions: sessionmaker[Session], producer: RecordingProducer, **kwargs: Any
) -> outbox.OutboxRelay:
    relay = outbox.OutboxRelay(sessions, producer, **kwargs)  # type: ignore[arg-type]
    relay.attach(sessions)
    return relay


def _commit_batch(sessions: sessionmaker[Session], values: list[str]) -> list[Envelope]:
    """One transaction as a consumer batch writes it: state rows and their events."""
    with session_scope(sessions) as session:
        outbox.batch_inserts(session)
        added = []
        for value in values:
            session.execute(state.insert().values(value=value))
            added.append(
                outbox.add(
                    session, "t.v1", f"p-{value}", value.encode(), source="t", event_type="t.V"
                )
            )
        return added


def _unpublished(sessions: sessionmaker[Session]) -> list[bytes]:
    with sessions() as session:
        return [
            bytes(p)
            for p in session.scalars(
                select(outbox.outbox_events.c.payload)
                .where(outbox.outbox_events.c.published_at.is_(None))
                .order_by(outbox.outbox_events.c.id)
            )
        ]


def _wait(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def test_handed_rows_are_published_without_reading_them_back(
    sessions: sessionmaker[Session], scans: list[int]
) -> None:
    producer = RecordingProducer()
    # A long poll interval: no idle scan during the test, only the one at start.
    relay = _relay(sessions, producer, poll_interval_s=30.0, mark_interval_s=0.2)
    relay.start()
    try:
        first = _commit_batch(sessions, ["a", "b", "c"])
        _wait(lambda: len(producer.acked) == 3)
        second = _commit_batch(sessions, ["d"])
        _wait(lambda: len(producer.acked) == 4)
        # The second transaction carried the first batch's marks; the relay marks the last
        # row itself once it has waited `mark_interval_s` for a writer.
        _wait(lambda: _unpublished(sessions) == [])
    finally:
        relay.stop()
    assert scans == []  # nothing was read back
    sent = [envelope for _, envelope in producer.sent]
    assert [e.event_id for e in sent] == [e.event_id for e in first + second]
    with sessions() as session:
        rows = session.execute(
            select(
                outbox.outbox_events.c.event_id,
                outbox.outbox_events.c.key,
                outbox.outbox_events.c.payload,
            ).order_by(outbox.outbox_events.c.id)
        ).all()
    assert [(e.event_id, e.key, e.data) for e in sent] == [tuple(row) for row in rows]


def test_handed_rows_the_broker_did_not_acknowledge_are_published_by_the_scan(
    sessions: sessionmaker[Session], scans: list[int]
) -> None:
    producer = RecordingProducer()
    relay = _relay(sessions, producer)
    assert relay.publish_pending() == 0  # start-up scan: nothing pending
    added = _commit_batch(sessions, ["a", "b", "c"])
    producer.fail_next = 2  # "a" and "b" are not acknowledged
    scans_before = len(scans)
    relay.publish_pending()
    assert len(scans) == scans_before  # handed over, not read
    assert _unpublished(sessions) == [b"a", b"b", b"c"]
    assert relay.publish_pending() == 3  # the scan finds them
    assert len(scans) == scans_before + 1
    assert _unpublished(sessions) == []
    # "c" was acknowledged in the failed pass but not marked (the relay stops at the first
    # failure): published again, in order, with the same event id (consumers dedupe).
    assert producer.acked == [e.event_id for e in [added[2], *added]]


def test_rows_handed_to_a_relay_that_died_are_published_after_restart(
    sessions: sessionmaker[Session],
) -> None:
    dead = _relay(sessions, RecordingProducer())
    assert dead.publish_pending() == 0
    added = _commit_batch(sessions, ["a", "b"])
    # The process dies here: handed over, never sent. A new process, a new relay.
    producer = RecordingProducer()
    restarted = outbox.OutboxRelay(sessions, producer)  # type: ignore[arg-type]
    assert restarted.publish_pending() == 2
    assert producer.acked == [e.event_id for e in added]
    assert _unpublished(sessions) == []


def test_a_row_written_without_hand_off_is_published_in_order_once(
    sessions: sessionmaker[Session], scans: list[int]
) -> None:
    producer = RecordingProducer()
    relay = _relay(sessions, producer)
    relay.publish_pending()
    first = _commit_batch(sessions, ["a"])
    with session_scope(sessions) as session:  # not a batch: no hand-off
        single = outbox.add(session, "t.v1", "p-x", b"x", source="t", event_type="t.V")
    last = _commit_batch(sessions, ["b"])
    while relay.publish_pending():
        pass
    assert producer.acked == [e.event_id for e in [*first, single, *last]]
    assert _unpublished(sessions) == []


def test_marks_carried_by_a_rolled_back_transaction_are_marked_later(
    sessions: sessionmaker[Session],
) -> None:
    producer = RecordingProducer()
    relay = _relay(sessions, producer)
    relay.publish_pending()
    _commit_batch(sessions, ["a", "b"])
    # Published and acknowledged; the marks wait for a writer's transaction.
    assert relay._pass(scan=False) == 2
    assert _unpublished(sessions) == [b"a", b"b"]
    with sessions() as session, session.begin():
        outbox.batch_inserts(session)
        outbox.add(session, "t.v1", "p-c", b"c", source="t", event_type="t.V")
        session.rollback()  # the change was refused
    assert _unpublished(sessions) == [b"a", b"b"]
    # The scan does not publish them again (their marks are in flight) and marks them.
    assert relay.publish_pending() == 0
    assert _unpublished(sessions) == []
    assert len(producer.sent) == 2


def test_a_relay_without_hand_off_marks_each_pass(sessions: sessionmaker[Session]) -> None:
    """Other services (no `attach`) keep the read-publish-mark pass."""
    producer = RecordingProducer()
    relay = outbox.OutboxRelay(sessions, producer)  # type: ignore[arg-type]
    _commit_batch(sessions, ["a", "b"])
    assert relay._pass(scan=True) == 2
    assert _unpublished(sessions) == []
