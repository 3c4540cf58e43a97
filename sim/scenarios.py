"""Declarative, seeded in-silico scenarios and the concrete plan each one makes for a person.

A `Scenario` says what kind of days people live (meals, how well they count and announce carbs,
exercise, dawn phenomenon, sensor quality, a dislodged cannula, the hub going offline). `plan()`
turns it, with a seed, into exact events for one person: meal times and sizes, what they
announce and when, and per-5-minute multipliers for the model (insulin sensitivity, endogenous
glucose production, exercise uptake).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from sim.cgm import CgmErrorModel
from sim.person import MINUTES_PER_DAY, VirtualPerson

__all__ = ["SCENARIOS", "Meal", "PersonPlan", "Scenario", "plan"]

STEP_MIN: Final = 5
STEPS_PER_DAY: Final = MINUTES_PER_DAY // STEP_MIN

# (minute of day, carbs range by age group: child in g/kg — a 20 kg child eats far less than a
#  40 kg one — adolescent and adult in g)
_MEALS: Final = (
    (7 * 60 + 30, ((0.9, 1.3), (50, 70), (40, 60))),
    (12 * 60 + 30, ((1.1, 1.5), (60, 90), (50, 80))),
    (15 * 60 + 30, ((0.4, 0.6), (20, 30), (15, 25))),
    (18 * 60 + 30, ((1.1, 1.5), (60, 90), (60, 90))),
)
_GROUP_INDEX: Final = {"child": 0, "adolescent": 1, "adult": 2}


@dataclass(frozen=True, slots=True)
class Meal:
    t_min: int
    carbs_g: float  # eaten
    announced_g: float  # entered into the bolus wizard
    announce_t_min: int | None  # None: never announced (missed bolus)


@dataclass(frozen=True)
class Scenario:
    name: str
    days: int
    description: str
    meals: bool = True
    carb_error: float = 0.0  # announced = eaten × U(1 − e, 1 + e)
    missed_bolus_prob: float = 0.0
    late_bolus_prob: float = 0.0
    late_bolus_delay_min: tuple[int, int] = (20, 60)
    # announced meals are bolused (and their carbs entered) this long before eating: the 15–20 min
    # pre-bolus clinics teach for rapid-acting insulin; 0 = at the start of eating
    bolus_lead_min: int = 0
    exercise_prob_per_day: float = 0.0
    dawn: bool = True
    dawn_rise: tuple[float, float] | None = None  # overrides the person's own dawn rise
    day_to_day: bool = True
    cgm: CgmErrorModel = field(default_factory=CgmErrorModel)
    cannula_dislodged: bool = False
    hub_offline_min: int = 0  # one window a day with no controller calls
    hypo_treatment: bool = True


SCENARIOS: Final[dict[str, Scenario]] = {
    s.name: s
    for s in (
        Scenario("standard", 14, "3 meals + snack, announced with a bolus; daily variability"),
        Scenario("carb_error", 7, "carb counts off by up to ±30 %", carb_error=0.3),
        Scenario(
            "missed_bolus", 7, "a quarter of meals eaten without a bolus", missed_bolus_prob=0.25
        ),
        Scenario(
            "pre_bolus",
            14,
            "the standard days with every meal bolused 15 min before eating",
            bolus_lead_min=15,
        ),
        Scenario(
            "late_bolus", 7, "half the meals bolused 20–60 min after eating", late_bolus_prob=0.5
        ),
        Scenario(
            "exercise",
            7,
            "45–60 min unannounced exercise every afternoon",
            exercise_prob_per_day=1.0,
        ),
        Scenario(
            "dawn", 7, "strong dawn phenomenon (EGP +25–45 % at 04–08)", dawn_rise=(0.25, 0.45)
        ),
        Scenario(
            "sensor_faults",
            7,
            "noisier sensor, gaps, frequent compression lows, badly calibrated sessions",
            cgm=CgmErrorModel(
                johnson_lambda=10.0,
                dropout_prob=0.05,
                gaps_per_day=2.0,
                compression_prob_per_night=0.6,
                bad_sensor_prob=0.5,
                session_days=3.0,
            ),
        ),
        Scenario(
            "cannula_dislodged",
            7,
            "cannula out at a random time; set changed when noticed",
            cannula_dislodged=True,
        ),
        Scenario(
            "hub_offline", 7, "hub offline 2 h a day: pump runs its schedule", hub_offline_min=120
        ),
    )
}


@dataclass(frozen=True)
class PersonPlan:
    """Everything about one person's run that does not depend on dosing."""

    meals: tuple[Meal, ...]
    si_mult: npt.NDArray[np.float64]  # per 5-min step
    egp_mult: npt.NDArray[np.float64]
    exercise_uptake_mmol_per_min: npt.NDArray[np.float64]
    exercise_windows: tuple[tuple[int, int], ...]
    dislodge_t_min: int | None
    offline: npt.NDArray[np.bool_]  # per step: controller not called


def _dawn_shape(minute_of_day: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """0 outside 04:00–08:00, a raised cosine peaking at 06:00 inside."""
    x = (minute_of_day - 240) / 240.0
    inside = (x >= 0) & (x <= 1)
    return np.where(inside, 0.5 * (1 - np.cos(2 * math.pi * x)), 0.0)


def plan(scenario: Scenario, person: VirtualPerson, rng: np.random.Generator) -> PersonPlan:
    """Draw the concrete events of `scenario` for `person`."""
    steps = scenario.days * STEPS_PER_DAY
    t = np.arange(steps, dtype=np.int64) * STEP_MIN
    mod = t % MINUTES_PER_DAY
    meals: list[Meal] = []
    if scenario.meals:
        g = _GROUP_INDEX[person.age_group]
        for day in range(scenario.days):
            for minute, ranges in _MEALS:
                lo, hi = ranges[g]
                if person.age_group == "child":
                    lo, hi = lo * person.weight_kg, hi * person.weight_kg
                eat = day * MINUTES_PER_DAY + minute + int(rng.integers(-30, 31))
                carbs = float(round(rng.uniform(lo, hi)))
                announced = carbs
                if scenario.carb_error > 0:
                    err = rng.uniform(1 - scenario.carb_error, 1 + scenario.carb_error)
                    announced = float(round(carbs * err))
                when: int | None = eat - scenario.bolus_lead_min
                if rng.random() < scenario.missed_bolus_prob:
                    when = None
                elif rng.random() < scenario.late_bolus_prob:
                    when = eat + int(rng.integers(*scenario.late_bolus_delay_min))
                meals.append(Meal(eat, carbs, announced, when))
    # day-to-day sensitivity, interpolated between noon values so it changes smoothly
    if scenario.day_to_day:
        sigma = math.sqrt(math.log(1 + person.daily_si_cv**2))
        daily = np.exp(rng.normal(-0.5 * sigma * sigma, sigma, scenario.days + 2))
        noons = (np.arange(scenario.days + 2) - 1) * MINUTES_PER_DAY + 720
        si = np.interp(t, noons, daily)
    else:
        si = np.ones(steps)
    rise = person.dawn_egp_rise
    if scenario.dawn_rise is not None:
        rise = float(rng.uniform(*scenario.dawn_rise))
    egp = 1.0 + (rise if scenario.dawn else 0.0) * _dawn_shape(mod)
    ex = np.zeros(steps)
    windows: list[tuple[int, int]] = []
    for day in range(scenario.days):
        if rng.random() >= scenario.exercise_prob_per_day:
            continue
        start = day * MINUTES_PER_DAY + 17 * 60 + int(rng.integers(-60, 61))
        duration = int(rng.integers(45, 61))
        intensity = float(rng.uniform(0.4, 0.7))
        windows.append((start, start + duration))
        during = (t >= start) & (t < start + duration)
        # extra insulin-independent uptake while moving (≈ 0.015 mmol/kg/min at full effort)
        ex[during] += intensity * 0.015 * person.weight_kg
        # sensitivity up during exercise, decaying over ~4 h afterwards
        after = t - (start + duration)
        boost = np.where(
            during, intensity, np.where(after >= 0, intensity * np.exp(-after / 120.0), 0.0)
        )
        si = si * (1.0 + boost)
    dislodge: int | None = None
    if scenario.cannula_dislodged:
        dislodge = int(
            rng.integers(
                MINUTES_PER_DAY, max(MINUTES_PER_DAY + 1, (scenario.days - 1) * MINUTES_PER_DAY)
            )
        )
    offline = np.zeros(steps, dtype=bool)
    if scenario.hub_offline_min > 0:
        for day in range(scenario.days):
            start = day * MINUTES_PER_DAY + int(rng.integers(6 * 60, 20 * 60))
            offline |= (t >= start) & (t < start + scenario.hub_offline_min)
    return PersonPlan(
        meals=tuple(meals),
        si_mult=si,
        egp_mult=egp,
        exercise_uptake_mmol_per_min=ex,
        exercise_windows=tuple(windows),
        dislodge_t_min=dislodge,
        offline=offline,
    )
