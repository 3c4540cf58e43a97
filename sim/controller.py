"""The controller interface every dosing algorithm plugs into for in-silico runs.

Every 5 minutes (unless the hub is offline) the runner calls `Controller.step` with what a real
controller on the hub would know: the latest CGM reading (or None when there is none), the
pump's status, pump history records new since the last call, and carbs the person announced
since the last call (with the time they were eaten). The controller answers with at most one
temp basal and at most one bolus; `None` means "leave the pump as it is" (the schedule, or a
running temp basal until it expires).

A controller is built per person from their pump settings by a factory registered under a name
in `sim.controllers.CONTROLLERS` (`make bench-clinical CONTROLLER=<name>`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from sim.cgm import CgmReading
from sim.person import TherapySettings
from sim.pump import BolusKind, PumpEvent, PumpStatus

__all__ = [
    "BolusCommand",
    "CarbAnnouncement",
    "Controller",
    "ControllerFactory",
    "ControllerInput",
    "ControllerOutput",
    "TempBasalCommand",
]


@dataclass(frozen=True, slots=True)
class CarbAnnouncement:
    """Carbs the person entered: `t_min` is when they ate (may be before the announcement)."""

    t_min: int
    carbs_g: float


@dataclass(frozen=True, slots=True)
class ControllerInput:
    t_min: int  # minutes since the start of the run (day 0 starts at midnight)
    cgm: CgmReading | None
    pump: PumpStatus
    new_pump_events: tuple[PumpEvent, ...]
    carbs: tuple[CarbAnnouncement, ...]

    @property
    def minute_of_day(self) -> int:
        return self.t_min % 1440


@dataclass(frozen=True, slots=True)
class TempBasalCommand:
    rate_u_per_h: float
    duration_min: int = 30


@dataclass(frozen=True, slots=True)
class BolusCommand:
    amount_u: float
    kind: BolusKind = "standard"
    extended_min: int = 0
    immediate_fraction: float = 1.0


@dataclass(frozen=True, slots=True)
class ControllerOutput:
    temp_basal: TempBasalCommand | None = None
    bolus: BolusCommand | None = None
    cancel_temp_basal: bool = False


class Controller(Protocol):
    """One person's controller; it may keep state between calls."""

    def step(self, inp: ControllerInput) -> ControllerOutput | None:
        """Decide what to do now; None = nothing."""
        ...


ControllerFactory = Callable[[TherapySettings], Controller]
