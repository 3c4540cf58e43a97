"""The driver interfaces the edge agent talks to: one for a pump, one for a CGM.

Both the simulated drivers (sim/) and the Bluetooth CGMS/IDS driver implement these Protocols.
Every call is async (Bluetooth is); a simulated driver simply answers at once.

How a pump command ends is the heart of safe dosing, so it is spelled out:

- it returns a `CommandAck`: the pump confirmed it;
- it raises `PumpRefusedError`: the pump answered and refused, nothing was delivered;
- it raises `DeliveryUnconfirmedError` (or anything else): the outcome is unknown — the command
  may or may not have reached the pump. The agent marks it uncertain and never re-sends it
  before pump history reconciles it (edge/uncertain.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

__all__ = [
    "BolusShape",
    "CgmDriver",
    "CgmReading",
    "CommandAck",
    "DeliveryUnconfirmedError",
    "GlucoseFlag",
    "PumpDriver",
    "PumpEventKind",
    "PumpHistoryEvent",
    "PumpRefusedError",
    "PumpStatusSnapshot",
]


class GlucoseFlag(enum.Enum):
    LOW = "low"  # below the sensor range; glucose_mg_dl is the range limit or None
    HIGH = "high"


@dataclass(frozen=True, slots=True)
class CgmReading:
    """One sensor reading, timestamped on the sensor's clock converted to UTC."""

    sensor_id: str
    sequence: int  # unique and increasing per sensor (CGMS: session time offset)
    timestamp: datetime
    glucose_mg_dl: float | None
    flag: GlucoseFlag | None = None
    trend_mg_dl_per_min: float | None = None
    quality_pct: float | None = None
    backfill: bool = False


@dataclass(frozen=True, slots=True)
class PumpStatusSnapshot:
    pump_time: datetime  # the pump's own clock (hub↔pump skew check)
    reservoir_u: float
    battery_pct: float
    suspended: bool
    scheduled_basal_u_per_h: float
    temp_basal_u_per_h: float | None
    temp_basal_remaining_min: int
    bolus_in_progress: bool
    last_history_sequence: int  # newest history record number; −1 when the history is empty
    last_bolus_at: datetime | None = None  # pump clock; an automatic dose older than it is stale


class PumpEventKind(enum.Enum):
    BOLUS_PROGRAMMED = "bolus_programmed"  # amount_u = programmed amount: the pump took it
    BOLUS_DELIVERED = "bolus_delivered"  # amount_u = insulin actually pumped
    TEMP_BASAL_STARTED = "temp_basal_started"  # amount_u = rate U/h, duration_min
    TEMP_BASAL_ENDED = "temp_basal_ended"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    BASAL_DELIVERED = "basal_delivered"
    ALARM = "alarm"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class PumpHistoryEvent:
    sequence: int  # the pump's record number, increasing
    timestamp: datetime  # pump clock, UTC
    kind: PumpEventKind
    amount_u: float = 0.0
    duration_min: int = 0
    reference: str = ""  # pump's bolus id, when it has one
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CommandAck:
    """The pump confirmed a command."""

    pump_time: datetime
    accepted_u: float | None = None  # for a bolus: the amount the pump programmed
    reference: str = ""  # pump's bolus id


class PumpRefusedError(Exception):
    """The pump answered and refused the command; nothing was delivered."""


class DeliveryUnconfirmedError(Exception):
    """The command may have reached the pump, but no confirmation came back."""


@dataclass(frozen=True, slots=True)
class BolusShape:
    """Standard: immediate_pct 100. Extended: 0. Dual-wave: in between."""

    insulin_u: float
    immediate_pct: float = 100.0
    extended_duration_min: int = 0


@runtime_checkable
class PumpDriver(Protocol):
    async def status(self) -> PumpStatusSnapshot: ...

    async def history_since(self, after_sequence: int) -> list[PumpHistoryEvent]:
        """Records with sequence > `after_sequence`, oldest first."""
        ...

    async def set_temp_basal(self, rate_u_per_h: float, duration_min: int) -> CommandAck: ...

    async def cancel_temp_basal(self) -> CommandAck: ...

    async def bolus(self, shape: BolusShape) -> CommandAck: ...

    async def suspend(self) -> CommandAck: ...

    async def resume(self) -> CommandAck: ...


@runtime_checkable
class CgmDriver(Protocol):
    async def readings_since(self, after_sequence: int) -> list[CgmReading]:
        """Readings with sequence > `after_sequence`, oldest first (includes backfill)."""
        ...
