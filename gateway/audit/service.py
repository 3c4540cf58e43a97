"""Tamper-evident audit log: a SHA-256 hash chain over every critical event.

Each row's hash covers its own canonical content and the previous row's hash, so editing,
deleting or reordering any committed row breaks every hash after it; `verify_chain` finds the
first such row. Rows join the caller's unit of work: an audited change and its audit row
commit together or not at all.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from gateway.audit.repository import AuditRepository
from gateway.models import AuditRow
from services.runtime.clock import Clock

__all__ = ["GENESIS_HASH", "AuditVerification", "record", "row_digest", "verify_chain"]

GENESIS_HASH = "0" * 64


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
) -> AuditRow:
    """Append one event to the chain (inside the caller's transaction)."""
    repo = AuditRepository(session)
    last = repo.last()
    prev_hash = last.row_hash if last is not None else GENESIS_HASH
    seq = last.seq + 1 if last is not None else 1
    # Microseconds dropped: the value must round-trip through every database unchanged.
    occurred_at = clock.now().replace(microsecond=0)
    clean = json.loads(json.dumps(details or {}, default=str))
    row = AuditRow(
        seq=seq,
        occurred_at=occurred_at,
        actor_id=actor_id,
        action=action,
        person_id=person_id,
        details=clean,
        prev_hash=prev_hash,
        row_hash=row_digest(
            prev_hash=prev_hash,
            seq=seq,
            occurred_at=occurred_at,
            actor_id=actor_id,
            action=action,
            person_id=person_id,
            details=clean,
        ),
    )
    repo.add(row)
    return row


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
