"""Simulated insulin pump: delivery increments, bolus kinds, temp basals, faults and history.

Time is integer minutes since the start of the simulation. `advance(t, dt)` delivers what the
pump would deliver in [t, t + dt) and returns the insulin that actually reaches the body —
which differs from what the pump believes it delivered when the cannula is dislodged (the pump
logs normally, the body gets nothing) or the line is occluded (nothing gets through; the pump
alarms only once the missed volume has built up).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Literal

from sim.person import TherapySettings

__all__ = [
    "BolusKind",
    "Pump",
    "PumpError",
    "PumpEvent",
    "PumpFault",
    "PumpStatus",
]

BolusKind = Literal["standard", "extended", "dual"]
_EPS: Final = 1e-9
_SLOT_MIN: Final = 5


class PumpFault(StrEnum):
    OCCLUSION = "occlusion"
    RESERVOIR_EMPTY = "reservoir_empty"
    BATTERY_EMPTY = "battery_empty"


class PumpError(ValueError):
    """A command the pump refuses; nothing about the pump changed."""


@dataclass(frozen=True, slots=True)
class PumpEvent:
    """One pump history record.

    kinds: basal (amount delivered since the previous basal record, detail = rate), bolus
    (programmed amount, detail = kind), bolus_delivered (amount actually pumped), temp_basal
    (amount = rate U/h, detail = minutes), temp_basal_end, suspend, resume, alarm (detail =
    fault), site_change, reservoir_change.
    """

    t_min: int
    kind: str
    amount_u: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class PumpStatus:
    """What the pump reports about itself (the same for the controller and the drivers)."""

    t_min: int
    scheduled_basal_u_per_h: float
    temp_basal_u_per_h: float | None
    temp_basal_remaining_min: int
    suspended: bool
    bolus_remaining_u: float
    reservoir_u: float
    battery_pct: float
    fault: PumpFault | None
    last_bolus_t_min: int | None

    @property
    def delivering_basal_u_per_h(self) -> float:
        if self.suspended or self.fault is not None:
            return 0.0
        if self.temp_basal_u_per_h is not None:
            return self.temp_basal_u_per_h
        return self.scheduled_basal_u_per_h


@dataclass(slots=True)
class _Bolus:
    programmed_u: float
    kind: str
    immediate_left_u: float
    extended_left_u: float
    extended_rate_u_per_min: float
    delivered_u: float = 0.0
    ext_acc_u: float = 0.0


@dataclass
class Pump:
    """One pump, programmed with a person's settings."""

    therapy: TherapySettings
    reservoir_u: float = 200.0
    battery_pct: float = 100.0
    increment_u: float = 0.05
    bolus_speed_u_per_min: float = 1.5
    occlusion_threshold_u: float = 2.5
    battery_drain_pct_per_day: float = 5.0
    history: list[PumpEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._slots = self.therapy.basal_per_slot(_SLOT_MIN)
        self._temp_rate: float | None = None
        self._temp_end_min = 0
        self._suspended = False
        self._fault: PumpFault | None = None
        self._boluses: list[_Bolus] = []
        self._basal_acc_u = 0.0
        self._basal_logged_u = 0.0
        self._basal_log_rate = -1.0
        self._basal_log_hour = 0
        self._occluded = False
        self._missed_u = 0.0
        self._dislodged = False
        self._last_bolus_t: int | None = None
        self._t_min = 0
        # totals (U): what the pump pushed out, what reached the body
        self.pumped_u = 0.0
        self.pumped_basal_u = 0.0
        self.pumped_bolus_u = 0.0
        self.to_body_u = 0.0

    # ------------------------------------------------------------------ queries
    def scheduled_rate(self, t_min: int) -> float:
        return self._slots[(t_min % 1440) // _SLOT_MIN]

    def status(self, t_min: int) -> PumpStatus:
        temp_active = self._temp_rate is not None and t_min < self._temp_end_min
        return PumpStatus(
            t_min=t_min,
            scheduled_basal_u_per_h=self.scheduled_rate(t_min),
            temp_basal_u_per_h=self._temp_rate if temp_active else None,
            temp_basal_remaining_min=max(0, self._temp_end_min - t_min) if temp_active else 0,
            suspended=self._suspended,
            bolus_remaining_u=round(
                float(sum(b.immediate_left_u + b.extended_left_u for b in self._boluses)), 4
            ),
            reservoir_u=round(self.reservoir_u, 3),
            battery_pct=round(self.battery_pct, 2),
            fault=self._fault,
            last_bolus_t_min=self._last_bolus_t,
        )

    @property
    def fault(self) -> PumpFault | None:
        return self._fault

    # ------------------------------------------------------------------ commands
    def _check_usable(self) -> None:
        if self._fault is not None:
            raise PumpError(f"pump is in fault ({self._fault}); clear it first")

    def set_temp_basal(self, t_min: int, rate_u_per_h: float, duration_min: int) -> None:
        """Run `rate_u_per_h` for `duration_min` (multiple of 30 min up to 24 h in real pumps;
        any 5–1440 min here), then return to the schedule."""
        self._check_usable()
        if not (math.isfinite(rate_u_per_h) and rate_u_per_h >= 0.0):
            raise PumpError(f"invalid temp basal rate {rate_u_per_h}")
        if rate_u_per_h > self.therapy.max_basal_u_per_h + _EPS:
            raise PumpError(
                f"temp basal {rate_u_per_h} U/h exceeds max basal {self.therapy.max_basal_u_per_h}"
            )
        if not 5 <= duration_min <= 1440:
            raise PumpError(f"temp basal duration must be 5–1440 min, got {duration_min}")
        self._flush_basal(t_min)
        rate = math.floor(rate_u_per_h / self.increment_u + _EPS) * self.increment_u
        self._temp_rate = round(rate, 4)
        self._temp_end_min = t_min + duration_min
        self.history.append(PumpEvent(t_min, "temp_basal", self._temp_rate, str(duration_min)))

    def cancel_temp_basal(self, t_min: int) -> None:
        if self._temp_rate is not None:
            self._flush_basal(t_min)
            self._temp_rate = None
            self.history.append(PumpEvent(t_min, "temp_basal_end", 0.0, "cancelled"))

    def bolus(
        self,
        t_min: int,
        amount_u: float,
        kind: BolusKind = "standard",
        *,
        extended_min: int = 0,
        immediate_fraction: float = 1.0,
    ) -> float:
        """Program a bolus; returns the amount accepted (rounded down to the increment).

        standard: all now; extended: all over `extended_min`; dual: `immediate_fraction` now and
        the rest over `extended_min`.
        """
        self._check_usable()
        if self._suspended:
            raise PumpError("pump is suspended")
        if not (math.isfinite(amount_u) and amount_u > 0.0):
            raise PumpError(f"invalid bolus amount {amount_u}")
        if amount_u > self.therapy.max_bolus_u + _EPS:
            raise PumpError(f"bolus {amount_u} U exceeds max bolus {self.therapy.max_bolus_u}")
        if self._boluses:
            raise PumpError("a bolus is already running")
        amount = round(math.floor(amount_u / self.increment_u + _EPS) * self.increment_u, 4)
        if amount <= 0.0:
            raise PumpError(f"bolus {amount_u} U is below the {self.increment_u} U increment")
        if kind == "standard":
            now_u, later_u = amount, 0.0
        elif kind in ("extended", "dual"):
            if not 30 <= extended_min <= 480:
                raise PumpError("extended part must run 30 min – 8 h")
            frac = 0.0 if kind == "extended" else immediate_fraction
            if not 0.0 <= frac <= 1.0:
                raise PumpError("immediate_fraction must be within 0–1")
            now_u = round(math.floor(amount * frac / self.increment_u + _EPS) * self.increment_u, 4)
            later_u = round(amount - now_u, 4)
        else:
            raise PumpError(f"unknown bolus kind {kind!r}")
        rate = later_u / extended_min if later_u > 0 else 0.0
        self._boluses.append(_Bolus(amount, kind, now_u, later_u, rate))
        self._last_bolus_t = t_min
        self.history.append(PumpEvent(t_min, "bolus", amount, kind))
        return amount

    def cancel_bolus(self, t_min: int) -> None:
        for b in self._boluses:
            self.history.append(
                PumpEvent(t_min, "bolus_delivered", round(b.delivered_u, 4), "cancelled")
            )
        self._boluses.clear()

    def suspend(self, t_min: int) -> None:
        if not self._suspended:
            self._flush_basal(t_min)
            self.cancel_bolus(t_min)
            self._suspended = True
            self.history.append(PumpEvent(t_min, "suspend"))

    def resume(self, t_min: int) -> None:
        if self._suspended:
            self._flush_basal(t_min)
            self._suspended = False
            self.history.append(PumpEvent(t_min, "resume"))

    # ------------------------------------------------------------------ faults and care
    def start_occlusion(self) -> None:
        self._occluded = True

    def dislodge_cannula(self) -> None:
        self._dislodged = True

    def change_infusion_set(self, t_min: int) -> None:
        """A new set clears an occlusion or a dislodged cannula."""
        self._occluded = False
        self._dislodged = False
        self._missed_u = 0.0
        if self._fault is PumpFault.OCCLUSION:
            self._fault = None
        self.history.append(PumpEvent(t_min, "site_change"))

    def change_reservoir(self, t_min: int, amount_u: float = 200.0) -> None:
        self.reservoir_u = amount_u
        if self._fault is PumpFault.RESERVOIR_EMPTY:
            self._fault = None
        self.history.append(PumpEvent(t_min, "reservoir_change", amount_u))

    def _alarm(self, t_min: int, fault: PumpFault) -> None:
        self._flush_basal(t_min)
        self.cancel_bolus(t_min)
        self._fault = fault
        self.history.append(PumpEvent(t_min, "alarm", 0.0, fault.value))

    # ------------------------------------------------------------------ delivery
    def flush_basal_record(self, t_min: int) -> None:
        """Write the basal record of the unfinished period now (e.g. at the end of a run)."""
        self._flush_basal(t_min)

    def _flush_basal(self, t_min: int) -> None:
        pending = self.pumped_basal_u - self._basal_logged_u
        if pending > _EPS:
            self.history.append(
                PumpEvent(t_min, "basal", round(pending, 4), f"{self._basal_log_rate:g}")
            )
            self._basal_logged_u = self.pumped_basal_u

    def advance(self, t_min: int, dt_min: int = 5) -> float:
        """Deliver over [t_min, t_min + dt_min); return the units that reached the body."""
        self._t_min = t_min
        if self._temp_rate is not None and t_min >= self._temp_end_min:
            self._flush_basal(self._temp_end_min)
            self._temp_rate = None
            self.history.append(PumpEvent(self._temp_end_min, "temp_basal_end", 0.0, "expired"))
        hour = t_min // 60
        if hour != self._basal_log_hour:  # hourly basal totals, as pumps keep them
            self._flush_basal(t_min)
            self._basal_log_hour = hour
        self.battery_pct = max(
            0.0, self.battery_pct - self.battery_drain_pct_per_day * dt_min / 1440
        )
        if self._fault is None and self.battery_pct <= 0.0:
            self._alarm(t_min, PumpFault.BATTERY_EMPTY)
        if self._suspended or self._fault is not None:
            return 0.0
        rate = (
            self._temp_rate
            if self._temp_rate is not None
            else self._slots[(t_min % 1440) // _SLOT_MIN]
        )
        if rate != self._basal_log_rate:
            self._flush_basal(t_min)
            self._basal_log_rate = rate
        inc = self.increment_u
        self._basal_acc_u += rate * dt_min / 60.0
        pulses = math.floor(self._basal_acc_u / inc + _EPS)
        basal_u = pulses * inc
        self._basal_acc_u -= basal_u
        bolus_u = 0.0
        if self._boluses:
            bolus_u = self._advance_boluses(t_min, dt_min)
        out_u = basal_u + bolus_u
        if out_u > self.reservoir_u + _EPS:
            # pump what is left, then stop
            scale = self.reservoir_u / out_u if out_u > 0 else 0.0
            basal_u *= scale
            bolus_u *= scale
            out_u = self.reservoir_u
            self._account(basal_u, bolus_u, out_u)
            self._alarm(t_min + dt_min, PumpFault.RESERVOIR_EMPTY)
        else:
            self._account(basal_u, bolus_u, out_u)
        if self._occluded:
            self._missed_u += out_u
            if self._missed_u >= self.occlusion_threshold_u and self._fault is None:
                self._alarm(t_min + dt_min, PumpFault.OCCLUSION)
            return 0.0
        if self._dislodged:
            return 0.0
        self.to_body_u += out_u
        return out_u

    def _account(self, basal_u: float, bolus_u: float, out_u: float) -> None:
        self.reservoir_u -= out_u
        self.pumped_u += out_u
        self.pumped_basal_u += basal_u
        self.pumped_bolus_u += bolus_u

    def _advance_boluses(self, t_min: int, dt_min: int) -> float:
        total = 0.0
        inc = self.increment_u
        done: list[_Bolus] = []
        for b in self._boluses:
            now_u = 0.0
            if b.immediate_left_u > _EPS:
                now_u = min(b.immediate_left_u, self.bolus_speed_u_per_min * dt_min)
                b.immediate_left_u = round(b.immediate_left_u - now_u, 6)
            elif b.extended_left_u > _EPS:
                b.ext_acc_u += b.extended_rate_u_per_min * dt_min
                step = min(b.extended_left_u, math.floor(b.ext_acc_u / inc + _EPS) * inc)
                b.ext_acc_u -= step
                b.extended_left_u = round(b.extended_left_u - step, 6)
                now_u = step
            b.delivered_u += now_u
            total += now_u
            if b.immediate_left_u <= _EPS and b.extended_left_u <= _EPS:
                done.append(b)
        for b in done:
            self._boluses.remove(b)
            self.history.append(
                PumpEvent(t_min + dt_min, "bolus_delivered", round(b.delivered_u, 4), b.kind)
            )
        return total
