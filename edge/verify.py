"""Hub-side verification of signed pump commands: authentic, fresh, in order, once, for us.

Checks, in order, each with its reason code (`RejectionReason`, named as in
`PumpCommandRejectionReason`):

1. signature over the exact command bytes by a trusted key (UNKNOWN_KEY, BAD_SIGNATURE,
   MALFORMED);
2. command id never seen before (DUPLICATE) — persisted;
3. patient and device are this hub's (WRONG_DEVICE);
4. origin may issue this action and declares at most its lifetime: 60 s automatic, 5 min manual
   or remote (NOT_PERMITTED, MALFORMED);
5. time (CLOCK_SKEW, EXPIRED) — see below;
6. sequence above the last accepted one for this device (STALE_SEQUENCE) — persisted.

Time. The hub judges freshness on an *effective now* E = max(hub wall clock, time floor). The
floor is a lower bound on true time that only ever moves forward: the `issued_at` of every
verified command, and any other clock the hub observes (pump clock, gateway time), each
advanced by the hub's monotonic clock since it was observed. Taking the maximum can only make
commands expire sooner, so a wrong or hostile time source can stop dosing but never revive a
command. The ±90 s hub↔cloud skew is tolerated only in the direction that cannot lengthen a
command's life: a command issued up to 90 s in the hub's future is accepted (the hub is behind)
but its deadline is clamped to `receipt + lifetime`; a command is rejected the moment
E ≥ expires_at — no grace is ever added to `expires_at`. A command issued more than 90 s in the
future is CLOCK_SKEW. A command issued more than its lifetime in the past is always EXPIRED.
"""

from __future__ import annotations

import enum
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from langerhans.device.v1 import device_pb2

from services.runtime.clock import Clock
from services.runtime.command_signing import SignatureRejectedError, TrustedKeys

__all__ = [
    "AUTOMATIC_LIFETIME_S",
    "MANUAL_LIFETIME_S",
    "SKEW_TOLERANCE_S",
    "CommandVerifier",
    "RejectionReason",
    "Verdict",
]

AUTOMATIC_LIFETIME_S = 60.0
MANUAL_LIFETIME_S = 300.0
SKEW_TOLERANCE_S = 90.0

_Origin = device_pb2.PumpCommandOrigin
_LIFETIME_S = {
    _Origin.PUMP_COMMAND_ORIGIN_AUTOMATIC: AUTOMATIC_LIFETIME_S,
    _Origin.PUMP_COMMAND_ORIGIN_MANUAL: MANUAL_LIFETIME_S,
    _Origin.PUMP_COMMAND_ORIGIN_REMOTE: MANUAL_LIFETIME_S,
}


class RejectionReason(enum.Enum):
    """Why the hub refused a command (names match `PumpCommandRejectionReason`)."""

    MALFORMED = "MALFORMED"
    BAD_SIGNATURE = "BAD_SIGNATURE"
    UNKNOWN_KEY = "UNKNOWN_KEY"
    EXPIRED = "EXPIRED"
    STALE_SEQUENCE = "STALE_SEQUENCE"
    DUPLICATE = "DUPLICATE"
    WRONG_DEVICE = "WRONG_DEVICE"
    HARD_LIMIT = "HARD_LIMIT"
    DELIVERY_UNCERTAIN = "DELIVERY_UNCERTAIN"
    CLOCK_SKEW = "CLOCK_SKEW"
    NOT_PERMITTED = "NOT_PERMITTED"
    BOLUS_IN_PROGRESS = "BOLUS_IN_PROGRESS"
    PUMP_SUSPENDED = "PUMP_SUSPENDED"
    RESERVOIR_INSUFFICIENT = "RESERVOIR_INSUFFICIENT"
    PUMP_ERROR = "PUMP_ERROR"
    PUMP_UNREACHABLE = "PUMP_UNREACHABLE"

    def to_proto(self) -> int:
        return int(device_pb2.PumpCommandRejectionReason.Value(
            f"PUMP_COMMAND_REJECTION_REASON_{self.value}"
        ))  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """Outcome of verification. An accepted command must reach the pump before `deadline`."""

    accepted: bool
    reason: RejectionReason | None = None
    detail: str = ""
    command: device_pb2.PumpCommand | None = None
    deadline: datetime | None = None  # on the hub's effective clock

    @classmethod
    def reject(
        cls,
        reason: RejectionReason,
        detail: str,
        command: device_pb2.PumpCommand | None = None,
    ) -> Verdict:
        return cls(False, reason, detail, command)


def _ts(ts: object) -> datetime | None:
    seconds = getattr(ts, "seconds", 0)
    nanos = getattr(ts, "nanos", 0)
    if not seconds and not nanos:
        return None
    return datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=nanos // 1000)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS device_sequence (
    device_id TEXT PRIMARY KEY, last_sequence INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS seen_command (
    command_id TEXT PRIMARY KEY, sequence INTEGER NOT NULL, accepted INTEGER NOT NULL,
    reason TEXT, seen_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS time_floor (
    id INTEGER PRIMARY KEY CHECK (id = 1), floor_at TEXT NOT NULL, hub_wall_at TEXT NOT NULL);
"""


class CommandVerifier:
    """Verifies envelopes for one hub; replay state lives in a SQLite file (survives restart)."""

    def __init__(
        self,
        db_path: Path,
        trusted_keys: TrustedKeys,
        *,
        device_id: str,
        patient_id: str,
        clock: Clock,
        skew_tolerance_s: float = SKEW_TOLERANCE_S,
    ) -> None:
        if not device_id or not patient_id:
            raise ValueError("a verifier is bound to one device and one patient")
        self._keys = trusted_keys
        self._device_id = device_id
        self._patient_id = patient_id
        self._clock = clock
        self._skew = timedelta(seconds=skew_tolerance_s)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        # floor as (instant, hub monotonic reading when it was that instant)
        self._floor: tuple[datetime, float] | None = None
        self._pump_skew_s: float | None = None  # hub wall clock minus pump clock
        row = self._db.execute("SELECT floor_at, hub_wall_at FROM time_floor").fetchone()
        if row is not None:
            floor_at, hub_wall_at = datetime.fromisoformat(row[0]), datetime.fromisoformat(row[1])
            # across a restart the monotonic clock is gone: advance by hub wall time elapsed,
            # never backwards if the wall clock stepped back
            elapsed = max(timedelta(0), clock.now() - hub_wall_at)
            self._floor = (floor_at + elapsed, clock.monotonic_s())

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ time
    def _floor_now(self) -> datetime | None:
        if self._floor is None:
            return None
        floor_at, mono_at = self._floor
        return floor_at + timedelta(seconds=max(0.0, self._clock.monotonic_s() - mono_at))

    def effective_now(self) -> datetime:
        now = self._clock.now()
        floor_now = self._floor_now()
        return now if floor_now is None else max(now, floor_now)

    def observe_time(self, instant: datetime) -> bool:
        """A lower bound on true time from any source; only ever moves the floor forward.

        A reading more than the skew tolerance ahead of the hub's wall clock is ignored (False):
        the floor is persisted and never moves back, so one wild clock must not be able to
        push it far ahead and refuse every command from then on.
        """
        if instant.tzinfo is None:
            raise ValueError("observed time must be timezone-aware")
        if instant > self._clock.now() + self._skew:
            return False
        self._raise_floor(instant)
        return True

    def _raise_floor(self, instant: datetime) -> None:
        floor_now = self._floor_now()
        if floor_now is not None and instant <= floor_now:
            return
        self._floor = (instant, self._clock.monotonic_s())
        self._db.execute(
            "INSERT INTO time_floor (id, floor_at, hub_wall_at) VALUES (1, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET floor_at=excluded.floor_at, "
            "hub_wall_at=excluded.hub_wall_at",
            (instant.isoformat(), self._clock.now().isoformat()),
        )

    def observe_pump_clock(self, pump_time: datetime) -> float:
        """Record the pump's clock (read with every status); returns hub − pump skew, seconds.

        While the two differ by more than the tolerance every command is refused (CLOCK_SKEW):
        one of the two clocks is wrong and the hub cannot tell which.
        """
        skew_s = (self._clock.now() - pump_time).total_seconds()
        self._pump_skew_s = skew_s
        self.observe_time(pump_time)
        return skew_s

    # ------------------------------------------------------------------ verification
    def verify(self, envelope: device_pb2.SignedPumpCommand | bytes) -> Verdict:
        try:
            command = self._keys.verify(envelope)
        except SignatureRejectedError as exc:
            return Verdict.reject(RejectionReason(exc.failure.value), exc.detail)
        if not command.command_id or command.WhichOneof("action") is None:
            return Verdict.reject(RejectionReason.MALFORMED, "missing command_id or action")
        if command.device_id != self._device_id or command.patient_id != self._patient_id:
            return Verdict.reject(
                RejectionReason.WRONG_DEVICE,
                f"for device {command.device_id!r}, this hub is {self._device_id!r}",
                command,
            )
        seen = self._db.execute(
            "SELECT accepted, reason FROM seen_command WHERE command_id = ?", (command.command_id,)
        ).fetchone()
        if seen is not None:
            return Verdict.reject(
                RejectionReason.DUPLICATE, f"command {command.command_id} already seen", command
            )
        verdict = self._judge(command)
        self._record(command, verdict)
        return verdict

    def _judge(self, command: device_pb2.PumpCommand) -> Verdict:
        lifetime_s = _LIFETIME_S.get(command.origin)
        if lifetime_s is None:
            return Verdict.reject(RejectionReason.MALFORMED, "origin unspecified", command)
        action = command.WhichOneof("action")
        if (
            command.origin == _Origin.PUMP_COMMAND_ORIGIN_AUTOMATIC
            and action == "deliver_bolus"
            and not command.deliver_bolus.automatic
        ):
            return Verdict.reject(
                RejectionReason.NOT_PERMITTED, "the loop may only issue micro-boluses", command
            )
        issued_at, expires_at = _ts(command.issued_at), _ts(command.expires_at)
        if issued_at is None or expires_at is None or expires_at <= issued_at:
            return Verdict.reject(RejectionReason.MALFORMED, "bad issued_at/expires_at", command)
        lifetime = timedelta(seconds=lifetime_s)
        if expires_at - issued_at > lifetime:
            return Verdict.reject(
                RejectionReason.MALFORMED,
                f"declares a life of {(expires_at - issued_at).total_seconds():.0f} s, "
                f"more than the {lifetime_s:.0f} s allowed for its origin",
                command,
            )
        if self._pump_skew_s is not None and abs(self._pump_skew_s) > self._skew.total_seconds():
            return Verdict.reject(
                RejectionReason.CLOCK_SKEW,
                f"hub and pump clocks differ by {self._pump_skew_s:.0f} s",
                command,
            )
        now = self.effective_now()
        if issued_at > now + self._skew:
            return Verdict.reject(
                RejectionReason.CLOCK_SKEW,
                f"issued {(issued_at - now).total_seconds():.0f} s in the hub's future",
                command,
            )
        if now >= expires_at:
            return Verdict.reject(
                RejectionReason.EXPIRED,
                f"expired {(now - expires_at).total_seconds():.1f} s ago",
                command,
            )
        last = self._last_sequence()
        if last is not None and command.sequence <= last:
            return Verdict.reject(
                RejectionReason.STALE_SEQUENCE,
                f"sequence {command.sequence} not above {last}",
                command,
            )
        # Accepting raises the time floor to issued_at (see _record): a command from the hub's
        # future thereby moves the hub's effective clock forward, so `expires_at` on that clock
        # never gives it more than its lifetime.
        return Verdict(True, command=command, deadline=expires_at)

    def last_accepted_sequence(self) -> int:
        """The highest sequence this hub ever accepted (persisted before any pump contact), 0
        when none: every command handed to the pump has a sequence at most this."""
        return self._last_sequence() or 0

    def seen(self, command_id: str) -> tuple[bool, RejectionReason | None] | None:
        """(accepted, reason) stored for a command id, or None if never seen (or pruned)."""
        row = self._db.execute(
            "SELECT accepted, reason FROM seen_command WHERE command_id = ?", (command_id,)
        ).fetchone()
        if row is None:
            return None
        return bool(row[0]), RejectionReason(row[1]) if row[1] else None

    def note_refusal(self, command_id: str, reason: RejectionReason) -> None:
        """A command that passed these checks was refused by a later one (hard limits, pump
        state). Its sequence stays consumed; only the stored verdict changes."""
        self._db.execute(
            "UPDATE seen_command SET accepted = 0, reason = ? WHERE command_id = ?",
            (reason.value, command_id),
        )

    def _last_sequence(self) -> int | None:
        row = self._db.execute(
            "SELECT last_sequence FROM device_sequence WHERE device_id = ?", (self._device_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def _record(self, command: device_pb2.PumpCommand, verdict: Verdict) -> None:
        cur = self._db.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            cur.execute(
                "INSERT INTO seen_command (command_id, sequence, accepted, reason, seen_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    command.command_id,
                    command.sequence,
                    int(verdict.accepted),
                    verdict.reason.value if verdict.reason else None,
                    self._clock.now().isoformat(),
                ),
            )
            if verdict.accepted:
                cur.execute(
                    "INSERT INTO device_sequence (device_id, last_sequence) VALUES (?, ?) "
                    "ON CONFLICT(device_id) DO UPDATE SET last_sequence=excluded.last_sequence",
                    (self._device_id, command.sequence),
                )
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        if verdict.accepted:
            issued_at = _ts(command.issued_at)
            if issued_at is not None:
                # authenticated and already bounded by the +tolerance check in _judge
                self._raise_floor(issued_at)

    def prune_seen(self, older_than: timedelta = timedelta(days=7)) -> int:
        """Forget command ids seen long ago; returns rows removed.

        Safe because a command older than its lifetime is EXPIRED and an old sequence is
        STALE_SEQUENCE anyway; this only keeps the hub's database small.
        """
        if older_than < timedelta(seconds=MANUAL_LIFETIME_S) + self._skew:
            raise ValueError("keep seen ids for at least a command lifetime plus the skew")
        cutoff = (self._clock.now() - older_than).isoformat()
        return self._db.execute("DELETE FROM seen_command WHERE seen_at < ?", (cutoff,)).rowcount

    def recheck(self, verdict: Verdict) -> Verdict:
        """Right before the pump is told: still inside the deadline? (EXPIRED otherwise)."""
        if not verdict.accepted or verdict.deadline is None:
            return verdict
        now = self.effective_now()
        if now >= verdict.deadline:
            return Verdict.reject(
                RejectionReason.EXPIRED,
                f"deadline passed {(now - verdict.deadline).total_seconds():.1f} s ago",
                verdict.command,
            )
        return verdict
