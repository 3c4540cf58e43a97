"""The hub's durable outbox: telemetry waits here, in order, until the cloud acknowledges it.

SQLite in WAL mode with `synchronous=FULL`: when `enqueue` returns, the record is on disk and
survives a crash or power loss. Sequence numbers come from an AUTOINCREMENT key, so they only
ever grow and are never reused, even after acknowledged rows are deleted; the cloud dedupes on
(device id, sequence).

Size policy. CGM readings, pump history and command outcomes are *protected*: never dropped,
whatever the outage length (a month of 5-minute readings is ~9,000 small rows). Snapshot kinds
(pump status, heartbeats) are superseded by newer ones, so only the newest
`max_snapshot_records` of them are kept; older snapshots are dropped first. If protected rows
pass `protected_warning_records`, `under_pressure` turns true so the heartbeat can say so.
"""

from __future__ import annotations

import enum
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Outbox", "OutboxRecord", "RecordKind"]


class RecordKind(enum.Enum):
    CGM_READING = "cgm_reading"
    PUMP_HISTORY = "pump_history"
    COMMAND_OUTCOME = "command_outcome"
    PUMP_STATUS = "pump_status"
    HEARTBEAT = "heartbeat"

    @property
    def protected(self) -> bool:
        return self in _PROTECTED


_PROTECTED = frozenset(
    {RecordKind.CGM_READING, RecordKind.PUMP_HISTORY, RecordKind.COMMAND_OUTCOME}
)


@dataclass(frozen=True, slots=True)
class OutboxRecord:
    sequence: int
    kind: RecordKind
    payload: bytes


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    sequence INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    protected INTEGER NOT NULL,
    payload BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_snapshots ON outbox (protected, sequence);
"""


class Outbox:
    """Durable FIFO of telemetry records with cumulative acknowledgement."""

    def __init__(
        self,
        path: Path,
        *,
        max_snapshot_records: int = 1_000,
        protected_warning_records: int = 20_000,
    ) -> None:
        if max_snapshot_records < 1:
            raise ValueError("max_snapshot_records must be at least 1")
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._max_snapshots = max_snapshot_records
        self._protected_warning = protected_warning_records

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def enqueue(self, kind: RecordKind, payload: bytes) -> int:
        """Store one record durably; returns its sequence number."""
        return self.enqueue_many([(kind, payload)])[0]

    def enqueue_many(self, records: Iterable[tuple[RecordKind, bytes]]) -> list[int]:
        """Store several records in one transaction (all or none)."""
        rows = [(kind, bytes(payload)) for kind, payload in records]
        for kind, _ in rows:
            if not isinstance(kind, RecordKind):
                raise TypeError(f"kind must be a RecordKind, got {kind!r}")
        with self._lock:
            cur = self._db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                sequences = []
                for kind, payload in rows:
                    cur.execute(
                        "INSERT INTO outbox (kind, protected, payload) VALUES (?, ?, ?)",
                        (kind.value, int(kind.protected), payload),
                    )
                    assert cur.lastrowid is not None
                    sequences.append(cur.lastrowid)
                if any(not kind.protected for kind, _ in rows):
                    self._trim_snapshots(cur)
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        return sequences

    def _trim_snapshots(self, cur: sqlite3.Cursor) -> None:
        cur.execute(
            "DELETE FROM outbox WHERE protected = 0 AND sequence NOT IN "
            "(SELECT sequence FROM outbox WHERE protected = 0 ORDER BY sequence DESC LIMIT ?)",
            (self._max_snapshots,),
        )

    def peek(self, limit: int = 100, after: int = 0) -> list[OutboxRecord]:
        """The oldest unacknowledged records with sequence > `after`, in order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT sequence, kind, payload FROM outbox WHERE sequence > ? "
                "ORDER BY sequence LIMIT ?",
                (after, limit),
            ).fetchall()
        return [OutboxRecord(int(s), RecordKind(k), bytes(p)) for s, k, p in rows]

    def ack(self, up_to_sequence: int) -> int:
        """The cloud has everything ≤ `up_to_sequence`: delete it; returns rows removed."""
        with self._lock:
            cur = self._db.execute("DELETE FROM outbox WHERE sequence <= ?", (up_to_sequence,))
            return cur.rowcount

    @property
    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    @property
    def under_pressure(self) -> bool:
        with self._lock:
            protected = self._db.execute(
                "SELECT COUNT(*) FROM outbox WHERE protected = 1"
            ).fetchone()[0]
        return int(protected) >= self._protected_warning
