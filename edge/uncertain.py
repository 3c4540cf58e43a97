"""Uncertain delivery: a pump command whose outcome was not confirmed, until history settles it.

Write-ahead: `begin` records a command as SENDING *before* the pump is told. `confirmed` or
`refused` settle it; `unconfirmed` (ack lost, timeout, link drop) makes it UNCERTAIN, and so does
a restart that finds it still SENDING. While anything is uncertain:

- automatic commands that could add insulin (bolus, temp basal above zero, resume) are refused
  with DELIVERY_UNCERTAIN — commands that only reduce delivery (suspend, cancel temp, zero temp)
  still go through, so the local suspend-before-low keeps working;
- an uncertain command is never sent again (`begin` refuses its id for good).

`reconcile` settles an uncertain command from pump history only: DELIVERED when the history
shows the matching dose within 0.1 U (0.1 U/h for a temp rate), ABSENT when history that is
complete well past the send time shows no dose at all. Anything in between (a bolus of another
size in the window) stays uncertain for a person to look at. State lives in SQLite.
"""

from __future__ import annotations

import enum
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from langerhans.device.v1 import device_pb2

from edge.drivers.base import PumpEventKind, PumpHistoryEvent

__all__ = [
    "AMOUNT_TOLERANCE_U",
    "DeliveryState",
    "Resolution",
    "UncertainCommand",
    "UncertainDeliveryTracker",
]

AMOUNT_TOLERANCE_U = 0.1
# pump and hub clocks may differ by up to 90 s (checked elsewhere); a command reaches the pump
# within seconds of being sent, so a matching record must lie inside this window around sent_at
_WINDOW_BEFORE = timedelta(seconds=90 + 30)
_WINDOW_AFTER = timedelta(seconds=90 + 120)


class DeliveryState(enum.Enum):
    SENDING = "sending"
    CONFIRMED = "confirmed"
    REFUSED = "refused"
    UNCERTAIN = "uncertain"
    DELIVERED = "delivered"  # reconciled: history shows it
    ABSENT = "absent"  # reconciled: history shows it did not happen


@dataclass(frozen=True, slots=True)
class UncertainCommand:
    command_id: str
    action: str
    automatic: bool
    amount_u: float  # bolus amount, or temp rate U/h
    duration_min: int
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class Resolution:
    command_id: str
    state: DeliveryState
    delivered_u: float
    history_sequence: int | None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS delivery (
    command_id TEXT PRIMARY KEY,
    action TEXT NOT NULL,
    automatic INTEGER NOT NULL,
    amount_u REAL NOT NULL,
    duration_min INTEGER NOT NULL,
    sent_at TEXT NOT NULL,
    state TEXT NOT NULL,
    delivered_u REAL,
    history_sequence INTEGER,
    detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS delivery_state ON delivery (state);
"""

_AUTOMATIC = device_pb2.PumpCommandOrigin.PUMP_COMMAND_ORIGIN_AUTOMATIC


def _adds_insulin(command: device_pb2.PumpCommand) -> bool:
    action = command.WhichOneof("action")
    if action == "set_temp_basal":
        return command.set_temp_basal.rate_u_per_h > 0
    return action in ("deliver_bolus", "resume")


def _expected(command: device_pb2.PumpCommand) -> tuple[float, int]:
    action = command.WhichOneof("action")
    if action == "deliver_bolus":
        return command.deliver_bolus.insulin_u, command.deliver_bolus.extended_duration_min
    if action == "set_temp_basal":
        return command.set_temp_basal.rate_u_per_h, command.set_temp_basal.duration_min
    return 0.0, 0


class UncertainDeliveryTracker:
    def __init__(self, db_path: Path) -> None:
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        # a command still SENDING after a restart may have reached the pump
        self._db.execute(
            "UPDATE delivery SET state = ?, detail = 'in flight when the hub stopped' "
            "WHERE state = ?",
            (DeliveryState.UNCERTAIN.value, DeliveryState.SENDING.value),
        )

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ gate
    @property
    def automatic_dosing_paused(self) -> bool:
        return bool(self.uncertain())

    def blocking_reason(self, command: device_pb2.PumpCommand) -> str | None:
        """Why this command must not be sent now, or None."""
        row = self._db.execute(
            "SELECT state FROM delivery WHERE command_id = ?", (command.command_id,)
        ).fetchone()
        if row is not None:
            return f"command {command.command_id} was already sent ({row[0]}); never re-sent"
        if command.origin == _AUTOMATIC and _adds_insulin(command):
            in_flight = self._db.execute(
                "SELECT command_id FROM delivery WHERE state = ?", (DeliveryState.SENDING.value,)
            ).fetchall()
            if in_flight:
                return f"command {in_flight[0][0]} is still being sent to the pump"
            pending = self.uncertain()
            if pending:
                return (
                    f"automatic dosing paused: {len(pending)} command(s) with uncertain "
                    f"delivery ({', '.join(p.command_id for p in pending)})"
                )
        return None

    def begin(self, command: device_pb2.PumpCommand, sent_at: datetime) -> None:
        """Record the command as SENDING; raises ValueError if it must not be sent."""
        reason = self.blocking_reason(command)
        if reason is not None:
            raise ValueError(reason)
        amount, duration = _expected(command)
        self._db.execute(
            "INSERT INTO delivery (command_id, action, automatic, amount_u, duration_min, "
            "sent_at, state) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                command.command_id,
                command.WhichOneof("action") or "",
                int(command.origin == _AUTOMATIC),
                amount,
                duration,
                sent_at.isoformat(),
                DeliveryState.SENDING.value,
            ),
        )

    def _settle(
        self,
        command_id: str,
        from_state: DeliveryState,
        to_state: DeliveryState,
        detail: str,
        *,
        delivered_u: float | None = None,
        history_sequence: int | None = None,
    ) -> None:
        cur = self._db.execute(
            "UPDATE delivery SET state = ?, detail = ?, delivered_u = ?, history_sequence = ? "
            "WHERE command_id = ? AND state = ?",
            (to_state.value, detail, delivered_u, history_sequence, command_id, from_state.value),
        )
        if cur.rowcount != 1:
            raise ValueError(f"command {command_id} is not {from_state.value}")

    def confirmed(self, command_id: str, delivered_u: float | None = None) -> None:
        self._settle(
            command_id,
            DeliveryState.SENDING,
            DeliveryState.CONFIRMED,
            "pump confirmed",
            delivered_u=delivered_u,
        )

    def refused(self, command_id: str, detail: str) -> None:
        self._settle(
            command_id, DeliveryState.SENDING, DeliveryState.REFUSED, detail, delivered_u=0.0
        )

    def unconfirmed(self, command_id: str, detail: str) -> None:
        self._settle(command_id, DeliveryState.SENDING, DeliveryState.UNCERTAIN, detail)

    def state(self, command_id: str) -> DeliveryState | None:
        row = self._db.execute(
            "SELECT state FROM delivery WHERE command_id = ?", (command_id,)
        ).fetchone()
        return None if row is None else DeliveryState(row[0])

    def record(self, command_id: str) -> tuple[DeliveryState, float | None, str] | None:
        """(state, delivered_u, detail) of a command handed to the pump, or None if never."""
        row = self._db.execute(
            "SELECT state, delivered_u, detail FROM delivery WHERE command_id = ?", (command_id,)
        ).fetchone()
        return None if row is None else (DeliveryState(row[0]), row[1], row[2])

    def uncertain(self) -> list[UncertainCommand]:
        rows = self._db.execute(
            "SELECT command_id, action, automatic, amount_u, duration_min, sent_at "
            "FROM delivery WHERE state = ? ORDER BY sent_at",
            (DeliveryState.UNCERTAIN.value,),
        ).fetchall()
        return [
            UncertainCommand(r[0], r[1], bool(r[2]), r[3], r[4], datetime.fromisoformat(r[5]))
            for r in rows
        ]

    # ------------------------------------------------------------------ reconciliation
    def reconcile(
        self, history: Sequence[PumpHistoryEvent], complete_through: datetime
    ) -> list[Resolution]:
        """Settle uncertain commands from pump history read up to `complete_through` (pump time).

        A history record settles at most one command, and records already used to settle a
        command are not used again.
        """
        used = {
            int(r[0])
            for r in self._db.execute(
                "SELECT history_sequence FROM delivery WHERE history_sequence IS NOT NULL"
            )
        }
        resolutions = []
        for pending in self.uncertain():
            resolution = self._match(pending, history, complete_through, used)
            if resolution is None:
                continue
            if resolution.history_sequence is not None:
                used.add(resolution.history_sequence)
            self._settle(
                pending.command_id,
                DeliveryState.UNCERTAIN,
                resolution.state,
                "reconciled from pump history",
                delivered_u=resolution.delivered_u,
                history_sequence=resolution.history_sequence,
            )
            resolutions.append(resolution)
        return resolutions

    @staticmethod
    def _match(
        pending: UncertainCommand,
        history: Sequence[PumpHistoryEvent],
        complete_through: datetime,
        used: set[int],
    ) -> Resolution | None:
        start, end = pending.sent_at - _WINDOW_BEFORE, pending.sent_at + _WINDOW_AFTER
        kind = {
            "deliver_bolus": PumpEventKind.BOLUS_PROGRAMMED,
            "set_temp_basal": PumpEventKind.TEMP_BASAL_STARTED,
            "cancel_temp_basal": PumpEventKind.TEMP_BASAL_ENDED,
            "suspend": PumpEventKind.SUSPENDED,
            "resume": PumpEventKind.RESUMED,
        }.get(pending.action)
        if kind is None:
            return None
        candidates = [
            e
            for e in history
            if e.kind is kind and start <= e.timestamp <= end and e.sequence not in used
        ]
        amount_matters = pending.action in ("deliver_bolus", "set_temp_basal")
        for event in candidates:
            if not amount_matters or abs(event.amount_u - pending.amount_u) <= AMOUNT_TOLERANCE_U:
                delivered = event.amount_u if pending.action == "deliver_bolus" else 0.0
                return Resolution(
                    pending.command_id, DeliveryState.DELIVERED, delivered, event.sequence
                )
        if candidates:
            return None  # something of that kind happened, but not this dose: a person decides
        if complete_through >= end:
            return Resolution(pending.command_id, DeliveryState.ABSENT, 0.0, None)
        return None  # history not yet complete past the window
