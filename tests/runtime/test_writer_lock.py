"""The in-process SQLite writer queue: waiting threads get the lock in order, promptly."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.orm import sessionmaker

from services.runtime.db import create_service_engine
from services.runtime.writer_lock import FifoLock, serialize_writers


def _waits_behind_a_greedy_writer(tmp_path: Path, *, serialized: bool) -> list[float]:
    """A thread writing back to back (2 ms each, like the consumer) and one that writes now
    and then (like the outbox relay): how long the second one waits for each transaction."""
    engine = create_service_engine("writer-lock-test", f"sqlite:///{tmp_path / 'g.sqlite3'}")
    if serialized:
        serialize_writers(engine)
    sessions = sessionmaker(engine)
    with sessions() as session, session.begin():
        session.execute(text("CREATE TABLE t (n INTEGER)"))
    stop = threading.Event()

    def greedy() -> None:
        while not stop.is_set():
            with sessions() as session, session.begin():
                session.execute(text("INSERT INTO t VALUES (1)"))
                time.sleep(0.002)

    worker = threading.Thread(target=greedy)
    worker.start()
    waits = []
    try:
        for _ in range(30):
            started = time.perf_counter()
            with sessions() as session, session.begin():
                session.execute(text("SELECT count(*) FROM t"))
                waits.append(time.perf_counter() - started)
            time.sleep(0.005)
    finally:
        stop.set()
        worker.join()
        engine.dispose()
    return waits


def test_a_writer_is_not_starved_by_one_that_begins_again_right_after_each_commit(
    tmp_path: Path,
) -> None:
    waits = _waits_behind_a_greedy_writer(tmp_path, serialized=True)
    # One greedy transaction is ~2 ms plus its commit; the queue lets us in after it.
    assert max(waits) < 0.25, waits


def test_lock_is_granted_in_request_order_and_is_reentrant() -> None:
    lock = FifoLock()
    lock.acquire()
    lock.acquire()  # same thread: no deadlock
    order: list[int] = []
    threads = []
    for n in range(5):

        def take(n: int = n) -> None:
            lock.acquire()
            order.append(n)
            lock.release()

        thread = threading.Thread(target=take)
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # each one queued before the next
    lock.release()
    assert order == []  # still held once
    lock.release()
    for thread in threads:
        thread.join(5)
    assert order == [0, 1, 2, 3, 4]


def test_sessions_of_two_threads_write_one_after_the_other(tmp_path: Path) -> None:
    engine = create_service_engine("writer-lock-test", f"sqlite:///{tmp_path / 'w.sqlite3'}")
    lock = serialize_writers(engine)
    assert lock is not None
    sessions = sessionmaker(engine)
    with sessions() as session, session.begin():
        session.execute(text("CREATE TABLE t (n INTEGER)"))
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with sessions() as session, session.begin():
            session.execute(text("INSERT INTO t VALUES (1)"))
            inside.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    inside.wait(5)
    blocked = threading.Event()

    def second() -> None:
        with sessions() as session, session.begin():
            session.execute(text("INSERT INTO t VALUES (2)"))
        blocked.set()

    other = threading.Thread(target=second)
    other.start()
    time.sleep(0.2)
    assert not blocked.is_set()  # queued behind the open transaction
    release.set()
    thread.join(5)
    other.join(5)
    assert blocked.is_set()
    with sessions() as session:
        assert [r[0] for r in session.execute(text("SELECT n FROM t ORDER BY rowid"))] == [1, 2]
    assert not lock.held
    engine.dispose()
