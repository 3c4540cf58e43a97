"""Outbox hand-off: committed batch rows go to the relay in memory, the scan stays the net.

Unit tests of the relay with a recording producer (no broker): what is published, how often
the relay reads pending rows back, and what stays pending for the scan. One test with the
real broker SIGKILLs a process whose relay holds acknowledged, unmarked rows (its worker half
runs as `python -m tests.runtime.test_outbox_handoff …`).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from sqlalchemy import Column, Integer, MetaData, String, Table, event, select
from sqlalchemy.orm import Session, sessionmaker

from services.runtime import outbox
from services.runtime.db import create_service_engine, session_scope
from services.runtime.kafka import Envelope, EventProducer
from services.runtime.kafka.envelope import decode_headers
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


def test_idle_scans_wait_for_a_committing_hand_off(
    sessions: sessionmaker[Session], scans: list[int]
) -> None:
    """Between a batch's commit and its hand-off the rows are committed and pending: an idle
    scan then would read them back. Here the gap lasts 0.3 s against 10 ms idle scans."""
    producer = RecordingProducer()
    relay = _relay(sessions, producer, poll_interval_s=0.01)
    relay.start()
    try:
        with session_scope(sessions) as session:
            # Registered before the outbox's own listeners: runs first after the commit.
            event.listen(session, "after_commit", lambda _s: time.sleep(0.3))
            outbox.batch_inserts(session)
            added = outbox.add(session, "t.v1", "p-a", b"a", source="t", event_type="t.V")
        _wait(lambda: producer.acked == [added.event_id])
        time.sleep(0.1)  # idle scans after the hand-off find nothing new
    finally:
        relay.stop()
    assert scans == []
    assert [e.event_id for _, e in producer.sent] == [added.event_id]


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


# ------------------------------------------------------------- real broker, SIGKILL (worker)
BATCH = 10


def _crash_worker(args: argparse.Namespace) -> None:
    """Two batch transactions with a running, attached relay, then SIGKILL: batch 1's marks
    ride in batch 2's transaction; batch 2 is acknowledged, its marks wait for a writer."""
    engine = create_service_engine("handoff-crash", args.db_url)
    outbox.create_tables(engine)
    state.create(engine, checkfirst=True)
    serialize_writers(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    producer = EventProducer(args.bootstrap, source="t")
    relay = outbox.OutboxRelay(sessions, producer, poll_interval_s=30.0, mark_interval_s=600.0)
    relay.attach(sessions)
    relay.start()
    for batch in range(2):
        values = [f"{batch}-{i}" for i in range(BATCH)]
        with session_scope(sessions) as session:
            outbox.batch_inserts(session)
            for value in values:
                session.execute(state.insert().values(value=value))
                outbox.add(
                    session, args.topic, f"p-{value}", value.encode(), source="t", event_type="t.V"
                )
        print(json.dumps({"committed": values}), flush=True)
        # Wait for the broker's acks of this batch (the relay holds them, unmarked).
        _wait(lambda: len(relay._unmarked) >= BATCH, 60.0)
    os.kill(os.getpid(), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--topic", required=True)
    _crash_worker(parser.parse_args())


# ------------------------------------------------------------- real broker, SIGKILL (test)
@pytest.mark.kafka
def test_sigkill_with_handed_and_unmarked_rows_loses_nothing(
    kafka_bootstrap: str, make_topic: Callable[..., str], tmp_path: Path
) -> None:
    topic = make_topic(partitions=3)
    db_url = f"sqlite:///{tmp_path / 'app.sqlite3'}"
    process = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.runtime.test_outbox_handoff",
            "--bootstrap",
            kafka_bootstrap,
            "--db-url",
            db_url,
            "--topic",
            topic,
        ],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert process.returncode == -signal.SIGKILL, process.stderr[-3000:]
    committed = [v for line in process.stdout.splitlines() for v in json.loads(line)["committed"]]
    assert len(committed) == 2 * BATCH

    engine = create_service_engine("handoff-crash", db_url)
    sessions = sessionmaker(engine)
    # Batch 1 was marked by batch 2's transaction; batch 2 is still pending.
    assert _unpublished(sessions) == [v.encode() for v in committed[BATCH:]]
    with EventProducer(kafka_bootstrap, source="t") as producer:
        # After the restart: a relay's scan publishes them (batch 2 for the second time).
        outbox.OutboxRelay(sessions, producer).drain(60)
    assert _unpublished(sessions) == []
    with sessions() as session:
        stored = dict(
            session.execute(
                select(outbox.outbox_events.c.event_id, outbox.outbox_events.c.payload)
            ).all()
        )
    engine.dispose()

    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    seen: list[tuple[str, bytes]] = []
    try:
        deadline = time.monotonic() + 60
        while len(seen) < 3 * BATCH and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                seen.extend((decode_headers(r.headers)["id"], r.value) for r in records)
        for records in consumer.poll(timeout_ms=2000).values():
            seen.extend((decode_headers(r.headers)["id"], r.value) for r in records)
    finally:
        consumer.close()
    # Every committed change is on the topic under its stored event id; batch 1 once,
    # batch 2 twice (acknowledged, never marked): same event ids, consumers dedupe.
    assert {value for _, value in seen} == {v.encode() for v in committed}
    assert all(stored[event_id] == value for event_id, value in seen)
    counts = {v.encode(): 0 for v in committed}
    for _, value in seen:
        counts[value] += 1
    assert [counts[v.encode()] for v in committed[:BATCH]] == [1] * BATCH
    assert [counts[v.encode()] for v in committed[BATCH : 2 * BATCH]] == [2] * BATCH


if __name__ == "__main__":
    main()
