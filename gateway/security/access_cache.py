"""The hot read path's access check: the same checks as `deps.patient_access`, remembered
for as long as the database has not changed.

Every request still verifies its token's times against the clock; what is remembered per
(session, account, role, person) is the result of the database half of the check: the
session is live, the account enabled with that role, and the caller's permissions over the
person. On SQLite (the default store) a remembered result is used only while the database's
`PRAGMA data_version` is unchanged, i.e. no connection of any process committed anything
since the result was read: a revoked share, a logout or a disabled account takes effect on the
very next request, on every worker. On PostgreSQL there is no such cheap signal and nothing is
remembered (every request reads the database).
"""

from __future__ import annotations

import sqlite3
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import anyio.to_thread
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from gateway.access import Caller, PatientContext, Permission, Role, permissions_for
from gateway.errors import Forbidden, NotFound
from gateway.security.tokens import APP_AUDIENCE, AccessClaims

__all__ = ["AccessGuard", "ChangeWatch", "LiveCheck"]

LiveCheck = Callable[[Session, AccessClaims], None]
"""Raises Unauthenticated unless the token's session is live and its account enabled."""

_MAX_ENTRIES = 20_000


class ChangeWatch:
    """Tells whether anything was committed to the database since a previous look.

    `version()` is SQLite's `PRAGMA data_version` on a private connection that never writes:
    it changes whenever any other connection (any thread, any process) commits. None when the
    store has no such signal (PostgreSQL, in-memory SQLite): then nothing may be cached.
    """

    def __init__(self, engine: Engine) -> None:
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        database = engine.url.database
        if engine.dialect.name == "sqlite" and database and database != ":memory:":
            self._conn = sqlite3.connect(database, check_same_thread=False, isolation_level=None)
            weakref.finalize(self, self._conn.close)

    @property
    def exact(self) -> bool:
        return self._conn is not None

    def version(self) -> int | None:
        if self._conn is None:
            return None
        with self._lock:
            row = self._conn.execute("PRAGMA data_version").fetchone()
        return int(row[0])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass(frozen=True)
class _Granted:
    version: int
    permissions: frozenset[Permission]


class AccessGuard:
    """Token + live session + relation check for read routes, with a change-validated cache."""

    def __init__(
        self, engine: Engine, read_sessions: sessionmaker[Session], check_live: LiveCheck
    ) -> None:
        self.watch = ChangeWatch(engine)
        # Pure reads: on SQLite DEFERRED transactions, so checks never wait on the write lock.
        self._reads = read_sessions
        self._check_live = check_live
        self._granted: dict[tuple[str, str, str, str], _Granted] = {}

    @property
    def read_sessions(self) -> sessionmaker[Session]:
        """Sessions for pure reads (DEFERRED on SQLite; refuse writes)."""
        return self._reads

    def _load(self, claims: AccessClaims, caller: Caller, person_id: str) -> frozenset[Permission]:
        with self._reads() as session:
            try:
                self._check_live(session, claims)
                return permissions_for(session, caller, person_id)
            finally:
                session.rollback()

    async def patient(
        self, claims: AccessClaims, person_id: str, permission: Permission, version: int | None
    ) -> PatientContext:
        """The caller's permissions over `person_id`; 401 / 404 / 403 exactly as the deps do.

        `version` is `watch.version()` read by the caller before anything else of the request
        (the request's later reads may reuse it): a commit after that look only makes an entry
        look older than it is (dropped on the next look), never newer.
        """
        if claims.audience != APP_AUDIENCE:
            raise NotFound("no such person, or no access")
        caller = Caller(claims.subject, Role(claims.role), claims.session_id)
        key = (claims.session_id, claims.subject, claims.role, person_id)
        cached = self._granted.get(key) if version is not None else None
        if cached is not None and cached.version == version:
            granted = cached.permissions
        else:
            granted = await anyio.to_thread.run_sync(self._load, claims, caller, person_id)
            if version is not None:
                if len(self._granted) >= _MAX_ENTRIES:
                    self._granted.clear()
                self._granted[key] = _Granted(version, granted)
        if not granted:
            raise NotFound("no such person, or no access")
        if permission not in granted:
            raise Forbidden(f"this needs the '{permission}' permission for that person")
        return PatientContext(person_id, caller, granted)
