"""Simulated device drivers for the edge agent: a pump and a CGM backed by one virtual person.

`SimulatedPerson` advances one person's physiology, pump and sensor in 5-minute blocks up to
the injected clock's `now()` whenever a driver is asked something, so a demo clock running 60×
faster simply makes the person live faster. The person eats (the standard scenario, a new plan
every day), treats lows with 15 g, and — with `self_bolus=True`, the default — boluses for meals
on the pump themselves as a person without a loop would; the edge agent can instead read
`carb_entries_since` and dose through the pump driver.

The driver classes are deliberately small and typed; the edge driver interface adapts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final

import numpy as np

from kernels.hovorka import N_INPUTS, step_block
from services.runtime.clock import Clock
from sim.cgm import CgmReading, CohortCgm
from sim.controller import CarbAnnouncement, ControllerInput
from sim.controllers.baseline import BaselineController
from sim.person import MG_DL_PER_MMOL_L, MMOL_PER_G_GLUCOSE, VirtualPerson, steady_state
from sim.pump import BolusKind, Pump, PumpStatus
from sim.runner import RESCUE_RECHECK_MIN, apply_output, rescue_carbs_g
from sim.scenarios import SCENARIOS, STEP_MIN, STEPS_PER_DAY, Scenario, plan

__all__ = [
    "SimulatedCgmDriver",
    "SimulatedPerson",
    "SimulatedPumpDriver",
    "TimedCgmReading",
    "TimedPumpEvent",
]

_DAY_MIN: Final = 1440


@dataclass(frozen=True, slots=True)
class TimedCgmReading:
    timestamp: datetime
    sequence: int  # reading number since the simulation origin (unique per person)
    glucose_mg_dl: int
    flag: str | None


@dataclass(frozen=True, slots=True)
class TimedPumpEvent:
    timestamp: datetime
    sequence: int  # index in the pump history
    kind: str
    amount_u: float
    detail: str


class SimulatedPerson:
    """One virtual person living on an injected clock."""

    def __init__(
        self,
        person: VirtualPerson,
        clock: Clock,
        *,
        seed: int = 0,
        scenario: Scenario | None = None,
        self_bolus: bool = True,
    ) -> None:
        self.person = person
        self.clock = clock
        self.seed = seed
        self.scenario = replace(scenario or SCENARIOS["standard"], days=1)
        now = clock.now()
        # the simulation starts at the UTC midnight before now and catches up silently
        self.origin = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        self.params = np.ascontiguousarray(person.params[None, :])
        self.state = np.ascontiguousarray(
            steady_state(person.params, person.therapy.target_mg_dl, person.therapy.basal_at(0))[
                None, :
            ]
        )
        self.pump = Pump(person.therapy, reservoir_u=300.0)
        self._bolus_wizard = BaselineController(person.therapy) if self_bolus else None
        self._inputs = np.zeros((1, N_INPUTS))
        self.t_min = 0
        self.readings: list[TimedCgmReading] = []
        self.carb_entries: list[tuple[datetime, CarbAnnouncement]] = []
        self._session_age0 = float(np.random.default_rng([seed, 99]).uniform(120, 14_400))
        self._day = -1
        self._next_treat = 0
        self._hist_ptr = 0
        self.sync()

    def _start_day(self, day: int) -> None:
        rng = np.random.default_rng([self.seed, day])
        self._plan = plan(self.scenario, self.person, rng)
        self._meals = [(m.t_min + day * _DAY_MIN, m) for m in self._plan.meals]
        session_age = np.array([self._session_age0 + day * _DAY_MIN])
        self._cgm = CohortCgm(
            1, STEPS_PER_DAY, rng, self.scenario.cgm, start_session_age_min=session_age
        )
        self._day = day

    def timestamp(self, t_min: int) -> datetime:
        return self.origin + timedelta(minutes=t_min)

    def sync(self) -> None:
        """Advance in 5-minute blocks up to the clock's now."""
        target = math.floor((self.clock.now() - self.origin).total_seconds() / 60.0)
        while self.t_min + STEP_MIN <= target:
            self._step()

    @property
    def glucose_mg_dl(self) -> float:
        """True blood glucose now (for tests and dashboards, never for dosing)."""
        return float(self.state[0, 0] / self.params[0, 0] * MG_DL_PER_MMOL_L)

    def _step(self) -> None:
        t = self.t_min
        day, k = divmod(t // STEP_MIN, STEPS_PER_DAY)
        if day != self._day:
            self._start_day(day)
        values, available = self._cgm.read(k, self.state[:, 12] * MG_DL_PER_MMOL_L)
        reading: CgmReading | None = None
        if bool(available[0]):
            reading = CohortCgm.to_reading(t, int(values[0]))
            seq = t // STEP_MIN
            self.readings.append(
                TimedCgmReading(self.timestamp(t), seq, reading.glucose_mg_dl, reading.flag)
            )
        carbs = 0.0
        announced: list[CarbAnnouncement] = []
        for eat_t, meal in self._meals:
            if t <= eat_t < t + STEP_MIN:
                carbs += meal.carbs_g
            if meal.announce_t_min is not None:
                ann_t = meal.announce_t_min + day * _DAY_MIN
                if t <= ann_t < t + STEP_MIN:
                    entry = CarbAnnouncement(eat_t, meal.announced_g)
                    announced.append(entry)
                    self.carb_entries.append((self.timestamp(ann_t), entry))
        fast = 0.0
        glucose = self.glucose_mg_dl
        if t >= self._next_treat and (
            glucose < 60.0 or (reading is not None and reading.glucose_mg_dl < 70)
        ):
            fast = rescue_carbs_g(self.person.weight_kg)
            self._next_treat = t + RESCUE_RECHECK_MIN
        if self._bolus_wizard is not None:
            history = self.pump.history
            new = tuple(history[self._hist_ptr :])
            self._hist_ptr = len(history)
            out = self._bolus_wizard.step(
                ControllerInput(t, reading, self.pump.status(t), new, tuple(announced))
            )
            if out is not None:
                apply_output(self.pump, t, out)
        delivered = self.pump.advance(t, STEP_MIN)
        inputs = self._inputs
        inputs[0, 0] = delivered * 1000.0
        inputs[0, 1] = carbs * MMOL_PER_G_GLUCOSE
        inputs[0, 2] = fast * MMOL_PER_G_GLUCOSE
        inputs[0, 3] = self._plan.si_mult[k]
        inputs[0, 4] = self._plan.egp_mult[k]
        inputs[0, 5] = self._plan.exercise_uptake_mmol_per_min[k]
        step_block(self.state, self.params, inputs, validate=False)
        self.t_min = t + STEP_MIN


class SimulatedCgmDriver:
    """The sensor side: readings every 5 minutes (none during warm-up or dropouts)."""

    def __init__(self, person: SimulatedPerson) -> None:
        self._person = person

    def readings_since(self, since: datetime) -> list[TimedCgmReading]:
        """Readings with a timestamp strictly after `since`, oldest first."""
        self._person.sync()
        return [r for r in self._person.readings if r.timestamp > since]

    def latest(self) -> TimedCgmReading | None:
        self._person.sync()
        return self._person.readings[-1] if self._person.readings else None


class SimulatedPumpDriver:
    """The pump side: status, commands and history. Refused commands raise `PumpError`."""

    def __init__(self, person: SimulatedPerson) -> None:
        self._person = person

    @property
    def _now_min(self) -> int:
        self._person.sync()
        return self._person.t_min

    def status(self) -> PumpStatus:
        return self._person.pump.status(self._now_min)

    def set_temp_basal(self, rate_u_per_h: float, duration_min: int) -> None:
        self._person.pump.set_temp_basal(self._now_min, rate_u_per_h, duration_min)

    def cancel_temp_basal(self) -> None:
        self._person.pump.cancel_temp_basal(self._now_min)

    def deliver_bolus(
        self,
        amount_u: float,
        kind: BolusKind = "standard",
        *,
        extended_min: int = 0,
        immediate_fraction: float = 1.0,
    ) -> float:
        """Program a bolus; returns the units accepted (rounded down to the pump increment)."""
        return self._person.pump.bolus(
            self._now_min,
            amount_u,
            kind,
            extended_min=extended_min,
            immediate_fraction=immediate_fraction,
        )

    def suspend(self) -> None:
        self._person.pump.suspend(self._now_min)

    def resume(self) -> None:
        self._person.pump.resume(self._now_min)

    def history_since(self, since: datetime) -> list[TimedPumpEvent]:
        """Pump history records newer than `since`, oldest first."""
        self._person.sync()
        ts = self._person.timestamp
        return [
            TimedPumpEvent(ts(e.t_min), i, e.kind, e.amount_u, e.detail)
            for i, e in enumerate(self._person.pump.history)
            if ts(e.t_min) > since
        ]

    def carb_entries_since(self, since: datetime) -> list[tuple[datetime, CarbAnnouncement]]:
        """Carbs the person entered (bolus wizard) after `since`."""
        self._person.sync()
        return [c for c in self._person.carb_entries if c[0] > since]
