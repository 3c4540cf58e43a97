"""Open-loop basal-bolus: what a person on a pump without automation does.

The scheduled basal runs untouched. Announced carbs get a meal bolus from the bolus wizard
(carbs / carb ratio + (glucose − target) / ISF − insulin on board from earlier boluses, the
correction part never negative). When glucose has stayed above 250 mg/dL for 2 h with no bolus
in that time, a correction bolus brings it back toward target, again minus insulin on board.
Every bolus is capped at max bolus and by max IOB.
"""

from __future__ import annotations

import math
from typing import Final

from sim.controller import BolusCommand, ControllerInput, ControllerOutput
from sim.person import TherapySettings

__all__ = ["BaselineController", "insulin_on_board_fraction"]

HIGH_MG_DL: Final = 250
HIGH_FOR_MIN: Final = 120


def insulin_on_board_fraction(minutes_ago: float, duration_min: float, peak_min: float) -> float:
    """Share of a bolus still active `minutes_ago` after it, exponential curve (oref0/Loop)."""
    if minutes_ago <= 0:
        return 1.0
    if minutes_ago >= duration_min:
        return 0.0
    td, tp, t = duration_min, peak_min, minutes_ago
    tau = tp * (1 - tp / td) / (1 - 2 * tp / td)
    a = 2 * tau / td
    s = 1 / (1 - a + (1 + a) * math.exp(-td / tau))
    return 1 - s * (1 - a) * ((t * t / (tau * td * (1 - a)) - t / tau - 1) * math.exp(-t / tau) + 1)


class BaselineController:
    """Meal and correction boluses with the person's own settings; basal as scheduled."""

    def __init__(self, therapy: TherapySettings) -> None:
        self.therapy = therapy
        self._boluses: list[tuple[int, float]] = []
        self._high_since: int | None = None
        self._pending_carbs_g = 0.0

    def iob_u(self, t_min: int) -> float:
        th = self.therapy
        horizon = t_min - th.insulin_duration_min
        self._boluses = [b for b in self._boluses if b[0] > horizon]
        return sum(
            amount
            * insulin_on_board_fraction(t_min - t, th.insulin_duration_min, th.insulin_peak_min)
            for t, amount in self._boluses
        )

    def step(self, inp: ControllerInput) -> ControllerOutput | None:
        th = self.therapy
        t = inp.t_min
        # insulin on board from what the pump actually took, not from what was asked
        for event in inp.new_pump_events:
            if event.kind == "bolus":
                self._boluses.append((event.t_min, event.amount_u))
        glucose = inp.cgm.glucose_mg_dl if inp.cgm is not None else None
        if glucose is None or glucose <= HIGH_MG_DL:
            self._high_since = None
        elif self._high_since is None:
            self._high_since = t
        self._pending_carbs_g += sum(c.carbs_g for c in inp.carbs)
        carbs_g = self._pending_carbs_g
        if inp.pump.bolus_remaining_u > 0 or inp.pump.fault is not None or inp.pump.suspended:
            return None  # try again when the pump can take a bolus
        if carbs_g <= 0.0:
            if (
                self._high_since is None
                or t - self._high_since < HIGH_FOR_MIN
                or (self._boluses and t - self._boluses[-1][0] < HIGH_FOR_MIN)
                or glucose is None
            ):
                return None
            amount = (glucose - th.target_mg_dl) / th.isf_mg_dl_per_u - self.iob_u(t)
            self._high_since = t  # wait another 2 h before the next correction
        else:
            correction = 0.0
            if glucose is not None:
                correction = (glucose - th.target_mg_dl) / th.isf_mg_dl_per_u
            iob = self.iob_u(t)
            amount = carbs_g / th.carb_ratio_g_per_u + max(0.0, correction - iob)
        self._pending_carbs_g = 0.0
        amount = min(amount, th.max_bolus_u, th.max_iob_u - self.iob_u(t))
        amount = math.floor(amount / 0.05 + 1e-9) * 0.05
        if amount < 0.05:
            return None
        return ControllerOutput(bolus=BolusCommand(round(amount, 2)))
