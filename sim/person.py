"""Virtual people: Hovorka physiology, inter-subject variability and clinician-style settings.

Parameter means are the Hovorka 2004 values; the spread follows the log-normal inter-subject
variability used for the Cambridge virtual population (Hovorka 2002, Wilinska 2010). Every
figure and its source is listed in docs/sim.md.

Therapy settings are derived the way a clinician would: the basal that holds this person steady
when fasting (found from the model's steady state, then rounded and slightly mis-titrated, as
real settings are), a total daily dose (TDD) with basal ≈ 40–50 % of it, the 500 rule for the
carb ratio and the 1800 rule for the sensitivity factor, a target of 100–110 mg/dL, and limits
inside the age group's hard limits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Final, Literal

import numpy as np
import numpy.typing as npt

from kernels.hovorka import N_INPUTS, N_PARAMS, N_STATES, step_block

__all__ = [
    "HARD_LIMITS",
    "MG_DL_PER_MMOL_L",
    "MMOL_PER_G_GLUCOSE",
    "AgeGroup",
    "HardLimits",
    "Physiology",
    "TherapySettings",
    "VirtualPerson",
    "basal_for_steady_glucose",
    "make_cohort",
    "make_person",
    "steady_state",
]

AgeGroup = Literal["child", "adolescent", "adult"]
MG_DL_PER_MMOL_L: Final = 18.016
MMOL_PER_G_GLUCOSE: Final = 1000.0 / 180.16
MINUTES_PER_DAY: Final = 1440


@dataclass(frozen=True, slots=True)
class HardLimits:
    """Age-group ceilings (brief §6): no setting may exceed them."""

    max_bolus_u: float
    max_basal_u_per_h: float
    max_iob_u: float


# brief §6: child / teen / adult / resistant / pregnant
HARD_LIMITS: Final[dict[str, HardLimits]] = {
    "child": HardLimits(5.0, 2.0, 7.0),
    "adolescent": HardLimits(10.0, 5.0, 13.0),
    "adult": HardLimits(17.0, 10.0, 22.0),
    "resistant": HardLimits(25.0, 12.0, 30.0),
    "pregnant": HardLimits(60.0, 25.0, 70.0),
}


@dataclass(frozen=True, slots=True)
class Physiology:
    """Hovorka model parameters of one person (per-kg values already multiplied by weight)."""

    weight_kg: float
    vg_l: float
    f01_mmol_per_min: float
    k12_per_min: float
    egp0_mmol_per_min: float
    ka1_per_min: float
    ka2_per_min: float
    ka3_per_min: float
    sit_per_min_per_mu_l: float
    sid_per_min_per_mu_l: float
    sie_per_mu_l: float
    ke_per_min: float
    vi_l: float
    tmax_i_min: float
    ag: float
    tmax_g_min: float
    tmax_g_fast_min: float
    tau_cgm_min: float
    renal_per_min: float = 0.003
    renal_threshold_mmol_l: float = 9.0

    def as_array(self) -> npt.NDArray[np.float64]:
        """The kernel's parameter row (order of `kernels.hovorka.PARAM_NAMES`)."""
        row = np.array(
            [
                self.vg_l, self.f01_mmol_per_min, self.k12_per_min, self.egp0_mmol_per_min,
                self.ka1_per_min, self.ka2_per_min, self.ka3_per_min,
                self.sit_per_min_per_mu_l * self.ka1_per_min,
                self.sid_per_min_per_mu_l * self.ka2_per_min,
                self.sie_per_mu_l * self.ka3_per_min,
                self.ke_per_min, self.vi_l, self.tmax_i_min, self.ag, self.tmax_g_min,
                self.tmax_g_fast_min, self.tau_cgm_min, self.renal_per_min,
                self.renal_threshold_mmol_l,
            ],
            dtype=np.float64,
        )  # fmt: skip
        assert row.shape == (N_PARAMS,)
        return row


@dataclass(frozen=True, slots=True)
class TherapySettings:
    """Pump settings as a clinician would program them."""

    age_group: AgeGroup
    basal_schedule: tuple[tuple[int, float], ...]  # (start minute of day, U/h), first at 0
    carb_ratio_g_per_u: float
    isf_mg_dl_per_u: float
    target_mg_dl: float
    max_basal_u_per_h: float
    max_bolus_u: float
    max_iob_u: float
    insulin_duration_min: int = 360
    insulin_peak_min: int = 75

    def __post_init__(self) -> None:
        limits = HARD_LIMITS[self.age_group]
        if not self.basal_schedule or self.basal_schedule[0][0] != 0:
            raise ValueError("the basal schedule must start at midnight")
        if self.max_bolus_u > limits.max_bolus_u or self.max_iob_u > limits.max_iob_u:
            raise ValueError(f"bolus/IOB limits exceed the {self.age_group} hard limits")
        if self.max_basal_u_per_h > limits.max_basal_u_per_h:
            raise ValueError(f"max basal exceeds the {self.age_group} hard limit")
        if any(rate > self.max_basal_u_per_h for _, rate in self.basal_schedule):
            raise ValueError("a scheduled basal rate exceeds max basal")

    def basal_at(self, minute_of_day: int) -> float:
        """Scheduled basal rate in U/h at a minute of the day."""
        rate = self.basal_schedule[0][1]
        for start, seg_rate in self.basal_schedule:
            if start <= minute_of_day:
                rate = seg_rate
        return rate

    def basal_per_slot(self, slot_min: int = 5) -> tuple[float, ...]:
        """Scheduled rate for each `slot_min` slot of the day (fast lookup in the pump)."""
        return tuple(self.basal_at(m) for m in range(0, MINUTES_PER_DAY, slot_min))

    @property
    def daily_basal_u(self) -> float:
        return sum(self.basal_at(m) for m in range(0, MINUTES_PER_DAY, 5)) * 5 / 60


@dataclass(frozen=True, slots=True)
class VirtualPerson:
    """One simulated person with type 1 diabetes."""

    person_id: str
    age_group: AgeGroup
    age_years: int
    physiology: Physiology
    therapy: TherapySettings
    dawn_egp_rise: float  # fractional EGP rise at the dawn peak (04:00–08:00)
    daily_si_cv: float  # day-to-day variability of insulin sensitivity
    steady_basal_u_per_h: float  # the basal that truly holds them at target fasting
    tdd_u: float
    params: npt.NDArray[np.float64] = field(repr=False, compare=False)

    @property
    def weight_kg(self) -> float:
        return self.physiology.weight_kg


def _steady_insulin_mu_l(p: npt.NDArray[np.float64], glucose_mmol_l: float) -> float:
    """Plasma insulin that makes dQ1 = dQ2 = 0 at `glucose_mmol_l` with no food (bisection)."""
    vg, f01, k12, egp0 = p[0], p[1], p[2], p[3]
    si_t, si_d, si_e = p[7] / p[4], p[8] / p[5], p[9] / p[6]
    g = glucose_mmol_l
    f01c = f01 * min(1.0, g / 4.5)
    fr = p[17] * (g - p[18]) * vg if g > p[18] else 0.0

    def balance(ins: float) -> float:
        x1, x2, x3 = si_t * ins, si_d * ins, si_e * ins
        return float(egp0 * max(0.0, 1.0 - x3) - f01c - fr - g * vg * x1 * x2 / (k12 + x2))

    lo, hi = 0.0, 1.0 / si_e
    if balance(lo) <= 0.0:
        return 0.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        if balance(mid) > 0.0:
            lo = mid
        else:
            hi = mid
    return float(0.5 * (lo + hi))


def basal_for_steady_glucose(
    p: npt.NDArray[np.float64], glucose_mg_dl: float, egp_multiplier: float = 1.0
) -> float:
    """Basal rate (U/h) that holds glucose at `glucose_mg_dl` when fasting."""
    q = p.copy()
    q[3] *= egp_multiplier
    ins = _steady_insulin_mu_l(q, glucose_mg_dl / MG_DL_PER_MMOL_L)
    return float(ins * q[10] * q[11] * 60.0 / 1000.0)


def steady_state(
    p: npt.NDArray[np.float64], glucose_mg_dl: float, basal_u_per_h: float | None = None
) -> npt.NDArray[np.float64]:
    """Fasting steady state at `glucose_mg_dl` (insulin compartments at the matching basal).

    With `basal_u_per_h` given, insulin compartments sit at that basal's steady state instead,
    and glucose at the requested value (the person then drifts if the basal is mis-titrated).
    """
    g = glucose_mg_dl / MG_DL_PER_MMOL_L
    if basal_u_per_h is None:
        ins = _steady_insulin_mu_l(p, g)
        u_mu_min = ins * p[10] * p[11]
    else:
        u_mu_min = basal_u_per_h * 1000.0 / 60.0
        ins = u_mu_min / (p[10] * p[11])
    x1, x2, x3 = p[7] / p[4] * ins, p[8] / p[5] * ins, p[9] / p[6] * ins
    q1 = g * p[0]
    y = np.zeros(N_STATES)
    y[0] = q1
    y[1] = x1 * q1 / (p[2] + x2)
    y[2] = y[3] = u_mu_min * p[12]
    y[4] = ins
    y[5], y[6], y[7] = x1, x2, x3
    y[12] = g
    return y


def _lognormal(rng: np.random.Generator, mean: float, cv: float) -> float:
    """A log-normal draw with the given arithmetic mean and coefficient of variation."""
    sigma2 = math.log(1.0 + cv * cv)
    return float(mean * math.exp(rng.normal(-0.5 * sigma2, math.sqrt(sigma2))))


def _round_to(value: float, step: float) -> float:
    return round(round(value / step) * step, 4)


# (age range years, weight range kg, insulin-sensitivity multiplier: puberty lowers it,
#  plausible daily basal need in U/kg/day: ≈ 45 % of a TDD of 0.5–1.0 / 0.7–1.3 / 0.4–0.9 U/kg)
_GROUPS: Final[
    dict[str, tuple[tuple[int, int], tuple[float, float], float, tuple[float, float]]]
] = {
    "child": ((6, 11), (20.0, 40.0), 1.0, (0.22, 0.45)),
    "adolescent": ((12, 17), (40.0, 75.0), 0.6, (0.30, 0.60)),
    "adult": ((18, 65), (55.0, 100.0), 1.0, (0.18, 0.40)),
}
_MAX_DRAWS: Final = 1000
# what a typical day's eating needs (g of carbohydrate), used to turn physiology into a TDD
_DAILY_CARBS_G: Final[dict[str, float]] = {"adolescent": 250.0, "adult": 200.0}
_CHILD_DAILY_CARBS_G_PER_KG: Final = 4.2
CR_TITRATION_SD: Final = 0.08  # carb ratio left after titration: × N(1, 0.08) within ±15 %


def _daily_carbs_g(age_group: AgeGroup, weight_kg: float) -> float:
    if age_group == "child":
        return _CHILD_DAILY_CARBS_G_PER_KG * weight_kg
    return _DAILY_CARBS_G[age_group]


def meal_insulin_ratio_g_per_u(
    p: npt.NDArray[np.float64], glucose_mg_dl: float, carbs_g: float = 50.0
) -> float:
    """The person's true carb ratio: grams covered by 1 U so that glucose is back where it
    started 5 h after a meal eaten with its bolus, on the steady basal (bisection)."""
    start = steady_state(p, glucose_mg_dl)
    basal_mu_per_block = start[4] * p[10] * p[11] * 5.0
    par = p[None, :].copy()

    def end_glucose(bolus_u: float) -> float:
        y = start[None, :].copy()
        inputs = np.zeros((1, N_INPUTS))
        inputs[0, 3:5] = 1.0
        inputs[0, 0] = basal_mu_per_block + bolus_u * 1000.0
        inputs[0, 1] = carbs_g * MMOL_PER_G_GLUCOSE
        step_block(y, par, inputs, validate=False)
        inputs[0, 0] = basal_mu_per_block
        inputs[0, 1] = 0.0
        for _ in range(59):
            step_block(y, par, inputs, validate=False)
        return float(y[0, 0] / p[0] * MG_DL_PER_MMOL_L)

    lo, hi = 0.0, carbs_g / 2.0
    for _ in range(24):
        mid = 0.5 * (lo + hi)
        if end_glucose(mid) > glucose_mg_dl:
            lo = mid
        else:
            hi = mid
    return carbs_g / max(0.5 * (lo + hi), 1e-6)


def make_person(person_id: str, age_group: AgeGroup, rng: np.random.Generator) -> VirtualPerson:
    """Draw one person's physiology and derive their pump settings."""
    (age_lo, age_hi), (w_lo, w_hi), _, (need_lo, need_hi) = _GROUPS[age_group]
    age = int(rng.integers(age_lo, age_hi + 1))
    weight = round(float(rng.uniform(w_lo, w_hi)), 1)
    target = float(rng.choice([100.0, 105.0, 110.0]))
    # like the Cambridge population, keep only physiologies whose insulin need is plausible
    for _ in range(_MAX_DRAWS):
        phys = _draw_physiology(age_group, weight, rng)
        params = phys.as_array()
        basal_day_u = basal_for_steady_glucose(params, target) * 24
        if not need_lo <= basal_day_u / weight <= need_hi:
            continue
        meal_g = _daily_carbs_g(age_group, weight) / 4.0
        meal_day_u = _daily_carbs_g(age_group, weight) / meal_insulin_ratio_g_per_u(
            params, target, meal_g
        )
        if 0.38 <= basal_day_u / (basal_day_u + meal_day_u) <= 0.55:
            break
    else:  # pragma: no cover - the ranges above are wide enough to make this unreachable
        raise RuntimeError(f"no plausible physiology for a {age_group} in {_MAX_DRAWS} draws")
    return _with_settings(person_id, age_group, age, phys, target=target, rng=rng)


def _draw_physiology(age_group: AgeGroup, weight: float, rng: np.random.Generator) -> Physiology:
    si_group = _GROUPS[age_group][2]
    # sensitivities share a common factor (people are "sensitive" or "resistant" overall)
    si_common = _lognormal(rng, 1.0, 0.35) * si_group
    return Physiology(
        weight_kg=weight,
        vg_l=_lognormal(rng, 0.16, 0.10) * weight,
        f01_mmol_per_min=_lognormal(rng, 0.0097, 0.15) * weight,
        k12_per_min=_lognormal(rng, 0.066, 0.25),
        egp0_mmol_per_min=_lognormal(rng, 0.0161, 0.20) * weight,
        ka1_per_min=_lognormal(rng, 0.006, 0.25),
        ka2_per_min=_lognormal(rng, 0.06, 0.25),
        ka3_per_min=_lognormal(rng, 0.03, 0.25),
        sit_per_min_per_mu_l=51.2e-4 * si_common * _lognormal(rng, 1.0, 0.2),
        sid_per_min_per_mu_l=8.2e-4 * si_common * _lognormal(rng, 1.0, 0.2),
        sie_per_mu_l=520e-4 * si_common * _lognormal(rng, 1.0, 0.2),
        ke_per_min=_lognormal(rng, 0.138, 0.15),
        vi_l=_lognormal(rng, 0.12, 0.10) * weight,
        tmax_i_min=float(np.clip(_lognormal(rng, 55.0, 0.20), 35.0, 90.0)),
        ag=float(np.clip(rng.normal(0.8, 0.05), 0.65, 0.95)),
        tmax_g_min=float(np.clip(_lognormal(rng, 40.0, 0.20), 25.0, 70.0)),
        tmax_g_fast_min=float(rng.uniform(15.0, 22.0)),
        tau_cgm_min=float(rng.uniform(5.0, 10.0)),
    )


def _with_settings(
    person_id: str,
    age_group: AgeGroup,
    age: int,
    phys: Physiology,
    *,
    target: float,
    rng: np.random.Generator,
) -> VirtualPerson:
    weight = phys.weight_kg
    params = phys.as_array()
    dawn_rise = float(rng.uniform(0.05, 0.15))
    # the truth: what holds them at their target when fasting, overnight and at dawn
    steady_basal = basal_for_steady_glucose(params, target)
    dawn_basal = basal_for_steady_glucose(params, target, 1.0 + dawn_rise)
    # the clinician's titration: right on average, a few percent off for any one person
    titration = float(np.clip(rng.normal(1.0, 0.01), 0.98, 1.02))
    base_rate = max(0.01, _round_to(steady_basal * titration, 0.01))
    # dawn segment starts an hour before the rise (insulin acts late) and covers part of it
    dawn_rate = max(base_rate, _round_to(0.5 * (base_rate + dawn_basal * titration), 0.01))
    schedule = ((0, base_rate), (3 * 60, dawn_rate), (7 * 60, base_rate))
    daily_basal = base_rate * 20 + dawn_rate * 4
    # the TDD the clinician reads off the pump: basal plus what a typical day's meals need
    true_carb_ratio = meal_insulin_ratio_g_per_u(
        params, target, _daily_carbs_g(age_group, weight) / 4.0
    )
    tdd = daily_basal + _daily_carbs_g(age_group, weight) / true_carb_ratio
    limits = HARD_LIMITS[age_group]
    # start from the 500 rule, then titrate at follow-up visits to what the person's meals show
    # (post-meal readings), as clinics do: close to the true ratio, with the error a few visits
    # leave (SD 8 %, within ±15 %). Drawn from a spawned stream, so the people drawn after this
    # one are the same as without it.
    cr_error = float(np.clip(rng.spawn(1)[0].normal(1.0, CR_TITRATION_SD), 0.85, 1.15))
    carb_ratio = float(np.clip(_round_to(true_carb_ratio * cr_error, 0.5), 2.0, 150.0))
    isf = float(np.clip(_round_to(1800.0 / tdd, 1.0), 10.0, 500.0))
    max_basal = min(limits.max_basal_u_per_h, _round_to(max(dawn_rate * 4.0, 0.5), 0.05))
    # a large meal (≈ 1.5 g/kg capped at 120 g) plus a correction
    max_bolus = min(limits.max_bolus_u, _round_to(min(1.5 * weight, 120.0) / carb_ratio + 3, 0.5))
    max_iob = min(limits.max_iob_u, _round_to(1.5 * max_bolus, 0.5))
    therapy = TherapySettings(
        age_group=age_group,
        basal_schedule=schedule,
        carb_ratio_g_per_u=carb_ratio,
        isf_mg_dl_per_u=isf,
        target_mg_dl=target,
        max_basal_u_per_h=max_basal,
        max_bolus_u=max_bolus,
        max_iob_u=max_iob,
        insulin_peak_min=65 if age_group == "child" else 75,
    )
    return VirtualPerson(
        person_id=person_id,
        age_group=age_group,
        age_years=age,
        physiology=phys,
        therapy=therapy,
        dawn_egp_rise=dawn_rise,
        daily_si_cv=float(rng.uniform(0.08, 0.15)),
        steady_basal_u_per_h=steady_basal,
        tdd_u=round(tdd, 1),
        params=params,
    )


def make_cohort(
    seed: int = 2004, *, children: int = 10, adolescents: int = 10, adults: int = 10
) -> list[VirtualPerson]:
    """The standard virtual cohort: the same seed always gives the same people."""
    rng = np.random.default_rng(seed)
    people: list[VirtualPerson] = []
    for group, count in (("child", children), ("adolescent", adolescents), ("adult", adults)):
        for k in range(count):
            people.append(make_person(f"{group}-{k + 1:02d}", group, rng))  # type: ignore[arg-type]
    return people
