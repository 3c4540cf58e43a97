"""Run a cohort through a scenario with a controller, 5 minutes at a time.

Per 5-minute block, for every person: the CGM reads (one vector expression for the cohort), the
person eats and treats lows (the same for every controller), the controller is called unless
the hub is offline, the pump delivers, and then one compiled kernel call advances the whole
cohort's physiology by five 1-minute RK4 steps.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace
from typing import Final

import numpy as np
import numpy.typing as npt

from kernels.hovorka import N_INPUTS, step_block
from sim.cgm import CgmReading, CohortCgm
from sim.controller import (
    CarbAnnouncement,
    ControllerFactory,
    ControllerInput,
    ControllerOutput,
)
from sim.controllers import resolve_controller
from sim.metrics import Outcomes, mean_outcomes, outcomes
from sim.person import MG_DL_PER_MMOL_L, MMOL_PER_G_GLUCOSE, VirtualPerson, steady_state
from sim.pump import Pump, PumpError
from sim.scenarios import STEP_MIN, STEPS_PER_DAY, PersonPlan, Scenario, plan

__all__ = ["RunResult", "apply_output", "rescue_carbs_g", "run_cohort"]

RESCUE_CARBS_G: Final = 15.0  # the rule of 15
# ISPAD 2022 (hypoglycaemia chapter): ≈ 0.3 g/kg of fast carbs, so a small child takes less
RESCUE_CARBS_G_PER_KG: Final = 0.3
RESCUE_RECHECK_MIN: Final = 15
NIGHT_ALARM_DELAY_MIN: Final = 20
SITE_CHECK_MG_DL: Final = 300  # a person looks at their site after an hour this high
SITE_CHECK_AFTER_MIN: Final = 60
SITE_NOTICED_MAX_MIN: Final = 12 * 60
SET_CHANGE_EVERY_DAYS: Final = 3
RESERVOIR_FILL_U: Final = 300.0

FloatArray = npt.NDArray[np.float64]


def rescue_carbs_g(weight_kg: float) -> float:
    """Fast carbs a person takes for a low: 0.3 g/kg, at most the rule of 15, whole grams."""
    return float(min(RESCUE_CARBS_G, round(RESCUE_CARBS_G_PER_KG * weight_kg)))


@dataclass
class RunResult:
    """Traces per person (rows) and 5-minute step (columns)."""

    scenario: Scenario
    controller: str
    people: list[VirtualPerson]
    seed: int
    glucose_mg_dl: FloatArray  # true blood glucose at each step
    cgm_mg_dl: npt.NDArray[np.int64]  # −1: no reading; 39 / 401: LOW / HIGH
    basal_u: FloatArray  # pumped per step
    bolus_u: FloatArray
    to_body_u: FloatArray
    carbs_g: FloatArray  # eaten per step (meals)
    rescue_carbs_g: FloatArray
    plans: list[PersonPlan]
    pumps: list[Pump] = field(repr=False)
    final_state: FloatArray = field(repr=False)

    @property
    def t_min(self) -> npt.NDArray[np.int64]:
        return np.arange(self.glucose_mg_dl.shape[1], dtype=np.int64) * STEP_MIN

    @property
    def patient_days(self) -> float:
        return float(len(self.people) * self.glucose_mg_dl.shape[1] / STEPS_PER_DAY)

    def person_outcomes(self, i: int) -> Outcomes:
        return outcomes(self.glucose_mg_dl[i], float(self.to_body_u[i].sum()))

    def cohort_outcomes(self) -> Outcomes:
        """Means over people, severe events summed over the cohort."""
        return mean_outcomes([self.person_outcomes(i) for i in range(len(self.people))])


def apply_output(pump: Pump, t_min: int, out: ControllerOutput) -> None:
    """Send a controller's decision to the pump; refused commands change nothing."""
    with contextlib.suppress(PumpError):
        if out.cancel_temp_basal:
            pump.cancel_temp_basal(t_min)
        if out.temp_basal is not None:
            pump.set_temp_basal(t_min, out.temp_basal.rate_u_per_h, out.temp_basal.duration_min)
    if out.bolus is not None:
        b = out.bolus
        with contextlib.suppress(PumpError):
            pump.bolus(
                t_min,
                b.amount_u,
                b.kind,
                extended_min=b.extended_min,
                immediate_fraction=b.immediate_fraction,
            )


def run_cohort(
    people: list[VirtualPerson],
    scenario: Scenario,
    controller: str | ControllerFactory = "baseline",
    *,
    seed: int = 0,
    days: int | None = None,
) -> RunResult:
    """Simulate every person through `scenario`; the same seed gives the same run."""
    name = controller if isinstance(controller, str) else getattr(controller, "__name__", "custom")
    factory = resolve_controller(controller) if isinstance(controller, str) else controller
    if days is not None and days != scenario.days:
        scenario = replace(scenario, days=days)
    if scenario.days < 1:
        raise ValueError("a run needs at least one day")
    n = len(people)
    steps = scenario.days * STEPS_PER_DAY
    plans = [plan(scenario, p, np.random.default_rng([seed, i])) for i, p in enumerate(people)]
    cgm = CohortCgm(n, steps, np.random.default_rng([seed, 1_000_003]), scenario.cgm)
    params = np.ascontiguousarray(np.stack([p.params for p in people]))
    state = np.ascontiguousarray(
        np.stack(
            [steady_state(p.params, p.therapy.target_mg_dl, p.therapy.basal_at(0)) for p in people]
        )
    )
    vg = params[:, 0]
    mods = np.empty((steps, n, 3))
    for i, pl in enumerate(plans):
        mods[:, i, 0] = pl.si_mult
        mods[:, i, 1] = pl.egp_mult
        mods[:, i, 2] = pl.exercise_uptake_mmol_per_min
    inputs = np.zeros((n, N_INPUTS))
    pumps = [Pump(p.therapy, reservoir_u=RESERVOIR_FILL_U) for p in people]
    controllers = [factory(p.therapy) for p in people]
    glucose = np.empty((n, steps))
    cgm_rec = np.empty((n, steps), dtype=np.int64)
    basal_rec = np.zeros((n, steps))
    bolus_rec = np.zeros((n, steps))
    body_rec = np.zeros((n, steps))
    carbs_rec = np.zeros((n, steps))
    rescue_rec = np.zeros((n, steps))

    meals = [[(m.t_min, m.carbs_g) for m in pl.meals] for pl in plans]
    announcements = [
        sorted(
            (m.announce_t_min, CarbAnnouncement(m.t_min, m.announced_g))
            for m in pl.meals
            if m.announce_t_min is not None
        )
        for pl in plans
    ]
    meal_ptr = [0] * n
    ann_ptr = [0] * n
    pending: list[list[CarbAnnouncement]] = [[] for _ in range(n)]
    hist_ptr = [0] * n
    next_treat = [0] * n
    high_since: list[int | None] = [None] * n
    low_since: list[int | None] = [None] * n
    dislodged_at: list[int | None] = [None] * n
    dislodge_t = [pl.dislodge_t_min for pl in plans]
    offline = [pl.offline.tolist() for pl in plans]
    hypo_treatment = scenario.hypo_treatment
    rescue_g = [rescue_carbs_g(p.weight_kg) for p in people]
    set_change_min = SET_CHANGE_EVERY_DAYS * 1440
    to_reading = CohortCgm.to_reading

    for k in range(steps):
        t = k * STEP_MIN
        g_now = state[:, 0] / vg * MG_DL_PER_MMOL_L
        glucose[:, k] = g_now
        values, available = cgm.read(k, state[:, 12] * MG_DL_PER_MMOL_L)
        cgm_rec[:, k] = np.where(available, values, -1)
        values_l = values.tolist()
        available_l = available.tolist()
        g_l = g_now.tolist()
        inputs[:, 3:6] = mods[k]
        t_end = t + STEP_MIN
        routine_change = t > 0 and t % set_change_min == 20 * 60
        for i in range(n):
            pump = pumps[i]
            reading: CgmReading | None = to_reading(t, values_l[i]) if available_l[i] else None
            # ---- the person
            carbs = 0.0
            ml = meals[i]
            mp = meal_ptr[i]
            while mp < len(ml) and ml[mp][0] < t_end:
                carbs += ml[mp][1]
                mp += 1
            meal_ptr[i] = mp
            al = announcements[i]
            ap = ann_ptr[i]
            while ap < len(al) and al[ap][0] < t_end:
                pending[i].append(al[ap][1])
                ap += 1
            ann_ptr[i] = ap
            fast = 0.0
            cgm_low = reading is not None and reading.glucose_mg_dl < 70
            if cgm_low:
                if low_since[i] is None:
                    low_since[i] = t
            else:
                low_since[i] = None
            if hypo_treatment and t >= next_treat[i]:
                # awake: act on the first low reading or on symptoms; asleep (23–07 h) the
                # alarm needs to repeat for a while, or the low to be deep enough to wake them
                asleep = (t % 1440) >= 23 * 60 or (t % 1440) < 7 * 60
                ls = low_since[i]
                if g_l[i] < (50.0 if asleep else 60.0) or (
                    ls is not None and t - ls >= (NIGHT_ALARM_DELAY_MIN if asleep else 0)
                ):
                    fast = rescue_g[i]
                    next_treat[i] = t + RESCUE_RECHECK_MIN
            if routine_change:
                pump.change_reservoir(t, RESERVOIR_FILL_U)
                pump.change_infusion_set(t)
                dislodged_at[i] = None
            dt_i = dislodge_t[i]
            # the dislodgement happens once, inside this block (not in every block after it)
            if dt_i is not None and t <= dt_i < t_end:
                pump.dislodge_cannula()
                dislodged_at[i] = t
                high_since[i] = None
            since = dislodged_at[i]
            if since is not None:
                if reading is not None and reading.glucose_mg_dl >= SITE_CHECK_MG_DL:
                    hs = high_since[i]
                    if hs is None:
                        high_since[i] = t
                    elif t - hs >= SITE_CHECK_AFTER_MIN:
                        pump.change_infusion_set(t)
                        dislodged_at[i] = None
                else:
                    high_since[i] = None
                if dislodged_at[i] is not None and t - since >= SITE_NOTICED_MAX_MIN:
                    pump.change_infusion_set(t)
                    dislodged_at[i] = None
                if dislodged_at[i] is None:
                    high_since[i] = None
            # ---- the controller, unless the hub is offline
            if not offline[i][k]:
                history = pump.history
                new_events = tuple(history[hist_ptr[i] :]) if len(history) > hist_ptr[i] else ()
                hist_ptr[i] = len(history)
                carbs_in = tuple(pending[i]) if pending[i] else ()
                if carbs_in:
                    pending[i] = []
                out = controllers[i].step(
                    ControllerInput(t, reading, pump.status(t), new_events, carbs_in)
                )
                if out is not None:
                    apply_output(pump, t, out)
            # ---- the pump
            basal_before = pump.pumped_basal_u
            bolus_before = pump.pumped_bolus_u
            delivered = pump.advance(t, STEP_MIN)
            basal_rec[i, k] = pump.pumped_basal_u - basal_before
            bolus_rec[i, k] = pump.pumped_bolus_u - bolus_before
            body_rec[i, k] = delivered
            carbs_rec[i, k] = carbs
            rescue_rec[i, k] = fast
            inputs[i, 0] = delivered * 1000.0
            inputs[i, 1] = carbs * MMOL_PER_G_GLUCOSE
            inputs[i, 2] = fast * MMOL_PER_G_GLUCOSE
        step_block(state, params, inputs, validate=False)

    return RunResult(
        scenario=scenario,
        controller=name,
        people=people,
        seed=seed,
        glucose_mg_dl=glucose,
        cgm_mg_dl=cgm_rec,
        basal_u=basal_rec,
        bolus_u=bolus_rec,
        to_body_u=body_rec,
        carbs_g=carbs_rec,
        rescue_carbs_g=rescue_rec,
        plans=plans,
        pumps=pumps,
        final_state=state,
    )
