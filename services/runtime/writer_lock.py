"""One SQLite writer at a time inside a process, queued on a lock instead of busy-polling.

Every transaction on a service's SQLite engine starts with `BEGIN IMMEDIATE` (the write
lock). When two threads of one process want it (the consumer and the outbox relay, the
scheduler, the delivery worker), the loser does not wait on the lock: SQLite's busy handler
sleeps 1, 2, 5 … 100 ms and tries again. A consumer that takes the lock again right after
each commit can starve the relay for seconds (seen with py-spy in `make bench-ingest`: the
relay thread spent most of its time in `BEGIN IMMEDIATE`), and every validated reading waits
for the relay.

`serialize_writers(engine)` makes threads of this process queue on a FIFO ticket lock held
from a connection's checkout to its check-in (a Session holds its connection for exactly
one transaction). A waiting thread is woken the moment the lock is released, in arrival
order. SQLite's own locking still guards against other processes. No-op for PostgreSQL.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from sqlalchemy import Engine, event

__all__ = ["FifoLock", "serialize_writers"]


class FifoLock:
    """A re-entrant lock granted in request order (threading.RLock does not promise that)."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._waiters: deque[threading.Lock] = deque()
        self._owner: int | None = None
        self._depth = 0

    def acquire(self) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return
            if self._owner is None and not self._waiters:
                self._owner, self._depth = me, 1
                return
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append(gate)
        gate.acquire()  # released by the previous owner, who made us the owner
        with self._mutex:
            self._owner, self._depth = me, 1

    def release(self) -> None:
        with self._mutex:
            if self._owner is None:
                raise RuntimeError("release of an unlocked FifoLock")
            self._depth -= 1
            if self._depth > 0:
                return
            self._owner = None
            if self._waiters:
                # Hand over: mark as owned so no newcomer slips in before the waiter runs.
                self._owner = -1
                self._waiters.popleft().release()

    @property
    def held(self) -> bool:
        return self._owner == threading.get_ident()


def serialize_writers(engine: Engine) -> FifoLock | None:
    """Queue this process's transactions on `engine` (SQLite only); returns the lock."""
    if engine.dialect.name != "sqlite":
        return None
    lock = FifoLock()
    # Connection records holding the lock (not in record.info: the pool clears that when it
    # reconnects, and a hold must be released exactly once whatever happened to the record).
    holding: set[int] = set()
    guard = threading.Lock()

    def checkout(_dbapi: Any, record: Any, _proxy: Any) -> None:
        lock.acquire()
        with guard:
            holding.add(id(record))

    def checkin(_dbapi: Any, record: Any) -> None:
        with guard:
            if id(record) not in holding:
                return
            holding.discard(id(record))
        lock.release()

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    return lock
