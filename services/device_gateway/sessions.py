"""Sessions for the gateway process: its database thread and its outbox relay take turns.

With SQLite both threads open IMMEDIATE (write-locking) transactions on the same file. When
one finds the lock taken, SQLite's busy handler sleeps with a growing back-off (1, 2, 5, 10 …
up to 100 ms per try) and checks again, so a waiter keeps sleeping after the lock was freed
and the other thread, already awake, takes it again. Under load that made the command path
wait far longer than the transactions it waited for. Inside one process a lock hands the
database over at once instead; other processes (another replica, a tool) still meet SQLite's
own locking. PostgreSQL has row locks and needs none of this.
"""

from __future__ import annotations

import threading
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from services.runtime.db import is_postgres

__all__ = ["gateway_sessions"]


def gateway_sessions(engine: Engine) -> sessionmaker[Session]:
    """A session factory whose sessions, used as context managers, hold one process lock."""
    if is_postgres(engine):
        return sessionmaker(engine)
    lock = threading.RLock()  # re-entrant: a nested session on the same thread must not hang

    class _TurnTakingSession(Session):
        def __enter__(self) -> _TurnTakingSession:
            lock.acquire()
            try:
                super().__enter__()
            except BaseException:
                lock.release()
                raise
            return self

        def __exit__(self, *exc: Any) -> None:
            try:
                super().__exit__(*exc)  # closes the session: its transaction has ended
            finally:
                lock.release()

    return sessionmaker(engine, class_=_TurnTakingSession)
