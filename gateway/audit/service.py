"""Tamper-evident audit log: a SHA-256 hash chain over every critical event.

Each row's hash covers its own canonical content and the previous row's hash, so editing,
deleting or reordering any committed row breaks every hash after it; `verify_chain` finds the
first such row. Rows join the caller's unit of work: an audited change and its audit row
commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from gateway.audit.repository import AuditRepository
from gateway.models import AuditRow
from services.runtime.clock import Clock

__all__ = [
    "GENESIS_HASH",
    "AuditVerification",
    "install_audit_chaining",
    "record",
    "row_digest",
    "verify_chain",
]

GENESIS_HASH = "0" * 64
_PENDING = "audit_pending"
_HELD = "audit_chain_lock_held"
_CHAIN_LOCK = threading.Lock()
_ADVISORY_KEY = 0x4C48_4155  # "LHAU"


def row_digest(
    *,
    prev_hash: str,
    seq: int,
    occurred_at: datetime,
    actor_id: str | None,
    action: str,
    person_id: str | None,
    details: dict[str, Any],
) -> str:
    content = json.dumps(
        {
            "seq": seq,
            "occurred_at": occurred_at.isoformat(),
            "actor_id": actor_id,
            "action": action,
            "person_id": person_id,
            "details": details,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=True,
    )
    return hashlib.sha256((prev_hash + content).encode()).hexdigest()


def record(
    session: Session,
    clock: Clock,
    *,
    action: str,
    actor_id: str | None,
    person_id: str | None = None,
    details: dict[str, Any] | None = None,
) -> None:
    """Queue one event; it is chained and written when the caller's transaction commits."""
    session.info.setdefault(_PENDING, []).append(
        {
            # Microseconds dropped: the value must round-trip through every database unchanged.
            "occurred_at": clock.now().replace(microsecond=0),
            "actor_id": actor_id,
            "action": action,
            "person_id": person_id,
            "details": json.loads(json.dumps(details or {}, default=str)),
        }
    )


def _chain_pending(session: Session) -> None:
    """before_commit: append the queued events to the chain while holding the chain lock.

    Chaining at commit time under a lock (an advisory transaction lock on PostgreSQL, a
    process lock on SQLite, which has one writer process) keeps concurrent requests from
    both linking to the same previous row; the unique prev_hash is the last line of defence.
    """
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _ADVISORY_KEY})
    else:
        # Lock order: the database's write lock first (BEGIN IMMEDIATE, taken here if this
        # unit of work has not touched the database yet), then the process lock. The other
        # order deadlocked: a thread holding the process lock waited for the write lock while
        # the write lock's holder waited for the process lock, until SQLite's busy timeout
        # failed one of them ("database is locked").
        session.connection()
        _CHAIN_LOCK.acquire()
        session.info[_HELD] = True
    repo = AuditRepository(session)
    last = repo.last()
    prev_hash = last.row_hash if last is not None else GENESIS_HASH
    seq = last.seq if last is not None else 0
    for item in pending:
        seq += 1
        row = AuditRow(seq=seq, prev_hash=prev_hash, **item)
        row.row_hash = row_digest(prev_hash=prev_hash, seq=seq, **item)
        repo.add(row)
        prev_hash = row.row_hash


def _release(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None and session.info.pop(_HELD, False):
        _CHAIN_LOCK.release()


def install_audit_chaining(factory: sessionmaker[Session]) -> None:
    """Make sessions from `factory` write queued audit events at commit."""
    event.listen(factory, "before_commit", _chain_pending)
    event.listen(factory, "after_transaction_end", _release)
    event.listen(factory, "after_soft_rollback", _discard_soft)


def _discard_soft(session: Session, previous_transaction: SessionTransaction) -> None:
    # A rolled-back unit of work must not leave its audit events for the next one.
    if previous_transaction.parent is None:
        session.info.pop(_PENDING, None)


@dataclass(frozen=True)
class AuditVerification:
    ok: bool
    rows_checked: int
    first_bad_seq: int | None = None
    reason: str = ""


def verify_chain(session: Session) -> AuditVerification:
    expected_prev = GENESIS_HASH
    expected_seq = 1
    checked = 0
    for row in AuditRepository(session).iter_in_order():
        checked += 1
        if row.seq != expected_seq:
            return AuditVerification(False, checked, row.seq, "sequence gap (row deleted)")
        if row.prev_hash != expected_prev:
            return AuditVerification(False, checked, row.seq, "previous-hash link broken")
        digest = row_digest(
            prev_hash=row.prev_hash,
            seq=row.seq,
            occurred_at=row.occurred_at,
            actor_id=row.actor_id,
            action=row.action,
            person_id=row.person_id,
            details=row.details,
        )
        if digest != row.row_hash:
            return AuditVerification(False, checked, row.seq, "row content altered")
        expected_prev = row.row_hash
        expected_seq += 1
    return AuditVerification(True, checked)
