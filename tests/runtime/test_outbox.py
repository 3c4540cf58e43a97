"""Transactional outbox: crashes between storage commit, publish and mark lose nothing.

The worker half runs as `python -m tests.runtime.test_outbox …` in a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaConsumer
from sqlalchemy import Column, Engine, Integer, String, Table, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.runtime import outbox
from services.runtime.db import create_service_engine, new_metadata, session_scope
from services.runtime.kafka import ConsumerRunner, Envelope, EventProducer, RunnerConfig, dedupe
from services.runtime.kafka.envelope import decode_headers
from services.runtime.writer_lock import serialize_writers
from tests.runtime.conftest import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 180.0

metadata = new_metadata()
changes = Table(
    "changes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("value", String(32), nullable=False),
)
effects = Table(
    "effects",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", String(64), nullable=False),
    Column("value", String(32), nullable=False),
)


def _engine(database_url: str, service: str) -> Engine:
    """The service's own storage, exactly as services open it."""
    return create_service_engine(service, database_url)


class CrashingRelay(outbox.OutboxRelay):
    """Dies by SIGKILL after the broker acknowledged a batch, before marking it published."""

    def mark_published(self, ids: Sequence[int]) -> None:
        print(json.dumps({"published_unmarked": len(ids)}), flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


# ---------------------------------------------------------------------- worker (subprocess)
def _app(args: argparse.Namespace) -> None:
    """Commit state changes with their events (some rolled back), then publish and crash."""
    sessions = sessionmaker(_engine(args.db_url, args.service))
    committed: list[str] = []
    for i in range(args.count):
        value = str(i)
        try:
            with session_scope(sessions) as session:
                session.execute(changes.insert().values(value=value))
                outbox.add(
                    session,
                    args.topic,
                    f"patient-{i % 7}",
                    value.encode(),
                    source="test-app",
                    event_type="test.Change",
                )
                if i % args.rollback_every == 0:
                    raise RuntimeError("business rule refused the change")
        except RuntimeError:
            continue
        committed.append(value)
    print(json.dumps({"committed": committed}), flush=True)
    producer = EventProducer(args.bootstrap, source="test-app")
    CrashingRelay(sessions, producer, batch_size=args.batch).publish_pending()
    raise AssertionError("the relay should have crashed")


def _relay(args: argparse.Namespace) -> None:
    sessions = sessionmaker(_engine(args.db_url, args.service))
    with EventProducer(args.bootstrap, source="test-app") as producer:
        published = outbox.OutboxRelay(sessions, producer, batch_size=args.batch).drain(120)
    print(json.dumps({"published": published}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["app", "relay"])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--db-url", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--topic", default="")
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--rollback-every", type=int, default=4)
    parser.add_argument("--batch", type=int, default=50)
    args = parser.parse_args()
    (_app if args.role == "app" else _relay)(args)


# ---------------------------------------------------------------------- test side
def _run(*args: str) -> tuple[int, list[dict[str, Any]], str]:
    process = subprocess.run(
        [sys.executable, "-m", "tests.runtime.test_outbox", *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=TIMEOUT_S,
        check=False,
    )
    lines = [json.loads(line) for line in process.stdout.splitlines() if line.startswith("{")]
    return process.returncode, lines, process.stderr


def _topic_events(bootstrap: str, topic: str, at_least: int) -> list[tuple[str, str]]:
    """(ce_id, value) of every record on `topic`, read from the beginning."""
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    found: list[tuple[str, str]] = []

    def read(timeout_ms: int) -> int:
        for records in consumer.poll(timeout_ms=timeout_ms).values():
            found.extend((decode_headers(r.headers)["id"], r.value.decode()) for r in records)
        return len(found)

    try:
        wait_until(lambda: read(500) >= at_least, TIMEOUT_S, f"{at_least} records on {topic}")
        read(2000)  # anything beyond what we expect would show up here
    finally:
        consumer.close()
    return found


@pytest.fixture
def app_storage(database_url: str, unique_service: str) -> Iterator[tuple[list[str], Engine]]:
    """The app's database (SQLite file, or a schema in PostgreSQL): worker args, engine."""
    engine = _engine(database_url, unique_service)
    yield ["--db-url", database_url, "--service", unique_service], engine
    engine.dispose()


@pytest.mark.kafka
@pytest.mark.slow
def test_crash_between_commit_and_publish_publishes_exactly_the_committed_changes(
    kafka_bootstrap: str, make_topic, tmp_path: Path, app_storage: tuple[list[str], Engine]
) -> None:
    topic = make_topic(partitions=3)
    app_db, app_engine = app_storage
    metadata.create_all(app_engine)
    outbox.create_tables(app_engine)

    # The app commits 120 changes (every 4th rolled back), the relay publishes the first 25,
    # the broker acknowledges them, and the process is SIGKILLed before it marks them.
    code, lines, err = _run(
        "app",
        "--bootstrap",
        kafka_bootstrap,
        *app_db,
        "--topic",
        topic,
        "--count",
        "120",
        "--batch",
        "25",
    )
    assert code == -signal.SIGKILL, err[-3000:]
    committed = set(lines[0]["committed"])
    assert len(committed) == 90
    assert lines[1] == {"published_unmarked": 25}
    with app_engine.connect() as connection:
        stored = {row[0] for row in connection.execute(select(changes.c.value))}
        assert outbox.pending_count(Session(connection)) == 90
    assert stored == committed

    # Restart: a fresh relay publishes everything still unmarked (the 25 again, then 65).
    code, lines, err = _run("relay", "--bootstrap", kafka_bootstrap, *app_db)
    assert code == 0, err[-3000:]
    assert lines[-1] == {"published": 90}
    with app_engine.connect() as connection:
        assert outbox.pending_count(Session(connection)) == 0
        event_ids = {
            row[0]: row[1]
            for row in connection.execute(
                select(outbox.outbox_events.c.event_id, outbox.outbox_events.c.payload)
            )
        }

    on_topic = _topic_events(kafka_bootstrap, topic, at_least=90 + 25)
    # At least once: the 25 published before the crash are there twice, with the SAME ce_id.
    assert len(on_topic) == 115
    assert {value for _, value in on_topic} == committed  # nothing rolled back, nothing missing
    assert {event_id for event_id, _ in on_topic} == set(event_ids)
    assert all(event_ids[event_id] == value.encode() for event_id, value in on_topic)

    # An idempotent consumer sees each committed change exactly once.
    consumer_engine = _engine(f"sqlite:///{tmp_path / 'consumer.sqlite3'}", "test-consumer")
    metadata.create_all(consumer_engine)
    dedupe.create_tables(consumer_engine)

    def handler(envelope: Envelope, session: Session) -> None:
        session.execute(
            effects.insert().values(event_id=envelope.event_id, value=envelope.data.decode())
        )

    runner = ConsumerRunner(
        RunnerConfig(group_id=f"g-{topic}", topics=[topic], bootstrap_servers=kafka_bootstrap),
        handler,
        sessionmaker(consumer_engine),
    )
    thread = threading.Thread(target=runner.run, kwargs={"install_signal_handlers": False})
    thread.start()
    try:

        def handled() -> int:
            with consumer_engine.connect() as connection:
                return int(
                    connection.execute(select(func.count()).select_from(effects)).scalar_one()
                )

        wait_until(lambda: handled() >= 90, TIMEOUT_S, "90 changes handled")
        thread.join(2.0)  # any duplicate would be handled within this pause
    finally:
        runner.stop()
        thread.join(60)
    assert not thread.is_alive()
    with consumer_engine.connect() as connection:
        values = [row[0] for row in connection.execute(select(effects.c.value))]
    consumer_engine.dispose()
    assert sorted(values) == sorted(committed)


def test_add_refuses_an_event_without_a_type(tmp_path: Path) -> None:
    engine = _engine(f"sqlite:///{tmp_path / 'db.sqlite3'}", "test-app")
    outbox.create_tables(engine)
    with pytest.raises(ValueError, match="event_type"), Session(engine) as session:
        outbox.add(session, "t.v1", "patient-1", b"x", source="test")


def test_rolled_back_change_leaves_no_outbox_row(tmp_path: Path) -> None:
    engine = _engine(f"sqlite:///{tmp_path / 'db.sqlite3'}", "test-app")
    metadata.create_all(engine)
    outbox.create_tables(engine)
    sessions = sessionmaker(engine)

    def refused_change() -> None:
        with session_scope(sessions) as session:
            session.execute(changes.insert().values(value="1"))
            outbox.add(session, "t.v1", "patient-1", b"1", source="test", event_type="test.Change")
            raise RuntimeError("refused")

    with pytest.raises(RuntimeError, match="refused"):
        refused_change()
    with session_scope(sessions) as session:
        envelope = outbox.add(
            session, "t.v1", "patient-1", b"2", source="test", event_type="test.Change"
        )
    with sessions() as session:
        rows = outbox.pending_rows(session, 10)
    assert [(row.topic, row.envelope.data) for row in rows] == [("t.v1", b"2")]
    assert rows[0].envelope.event_id == envelope.event_id
    assert rows[0].envelope.time == envelope.time


def test_relay_reads_committed_rows_without_waiting_for_a_writer(tmp_path: Path) -> None:
    """With a read-only engine the relay's read does not queue behind a long transaction (it
    sees a snapshot of committed rows only); marking rows published still takes the lock."""
    url = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    engine = _engine(url, "test-app")
    outbox.create_tables(engine)
    serialize_writers(engine)
    readers = sessionmaker(create_service_engine("test-app", url, read_only=True))
    sessions = sessionmaker(engine)
    with session_scope(sessions) as session:
        outbox.add(session, "t.v1", "patient-1", b"committed", source="t", event_type="test.V")
    relay = outbox.OutboxRelay(
        sessions, EventProducer.__new__(EventProducer), read_session_factory=readers
    )

    read: list[list[bytes]] = []

    def read_pending() -> None:
        with relay._readers() as session:
            read.append([r.envelope.data for r in outbox.pending_rows(session, 10)])

    with sessions() as writer, writer.begin():
        # A writer holds the lock with an uncommitted row.
        outbox.add(writer, "t.v1", "patient-2", b"uncommitted", source="t", event_type="test.V")
        thread = threading.Thread(target=read_pending)
        thread.start()
        thread.join(5)
        assert not thread.is_alive()
    assert read == [[b"committed"]]


def test_batched_adds_are_one_insert_at_commit_and_vanish_with_a_rollback(
    tmp_path: Path,
) -> None:
    engine = _engine(f"sqlite:///{tmp_path / 'db.sqlite3'}", "test-app")
    outbox.create_tables(engine)

    def stored(session: Session) -> int:
        # What the transaction itself sees in the table (its own writes included).
        return int(
            session.connection().exec_driver_sql("SELECT count(*) FROM outbox_events").scalar_one()
        )

    sessions = sessionmaker(engine)
    with sessions() as session:
        # A rolled-back batch: its rows must not reach the next commit of the same session.
        with session.begin():
            outbox.batch_inserts(session)
            outbox.add(session, "t.v1", "patient-1", b"gone", source="t", event_type="test.V")
            session.rollback()
        with session.begin():
            outbox.batch_inserts(session)
            added = [
                outbox.add(
                    session, "t.v1", "patient-1", str(i).encode(), source="t", event_type="test.V"
                )
                for i in range(50)
            ]
            assert stored(session) == 0  # nothing written before the commit
        # Without a batch: written at once.
        with session.begin():
            assert stored(session) == 50
            outbox.add(session, "t.v1", "patient-2", b"single", source="t", event_type="test.V")
            assert stored(session) == 51
    with sessions() as session:
        rows = outbox.pending_rows(session, 100)
    assert [row.envelope.data for row in rows] == [str(i).encode() for i in range(50)] + [b"single"]
    assert [row.envelope.event_id for row in rows[:50]] == [e.event_id for e in added]
    assert [row.envelope.time for row in rows[:50]] == [e.time for e in added]


if __name__ == "__main__":
    main()
