"""What a model-predictive controller on each person's own model gets when it reads the CGM.

Run as `python -m bench.clinical_model_mpc [--days N] [--hold-mg-dl H]` (or
`make bench-clinical-mpc`). The clairvoyant bound (`bench.clinical_bound`) plans on the true
state of the body and true blood glucose. A controller has neither: it reads the CGM (noise,
lag, a calibration error per sensor session) and has to estimate the state. This benchmark runs
the bound's planner as a real controller in `sim.runner`:

- **Model:** either the person's exact Hovorka parameters (what no controller can know), or a
  model *identified* from a run-in week of the dosing engine (run seed 8). The identification is
  optimistic: it fits seven parameters of the age group's typical model (F01, EGP0, one factor on
  the three insulin sensitivities, ke, tmaxI, Ag, tmaxG) to 6-h windows, each started from the
  true state of the body and scored on true glucose.
- **State:** an observer runs the model on what the pump reports it is delivering, the boluses
  the controller gave and the announced carbs, and moves the model's glucose part of the way
  towards each CGM reading. Rescue carbs are not known to it.
- **Decisions:** every 15 min and at each announced meal, the planner's families and cost (steps
  out of 70–180 mg/dL, below 54 ten times; ties to `hold_mg_dl`), without the day's sensitivity
  multipliers. A plan's first 30 min become a temp basal and its bolus a bolus. Between meals
  the bound may give corrections of up to a fifth of max bolus; `--correction-cap-basal-h`
  caps them as brief §6 caps a micro-bolus (30 min of scheduled basal).

Prints a table and ends with `RESULT clinical_model_mpc days=<n> hold_mg_dl=<h>
engine_tir=<%> engine_tbr70=<%> exact_tir=<%> exact_tbr70=<%> exact_capped_tir=<%>
exact_capped_tbr70=<%> identified_tir=<%> identified_tbr70=<%> identified_severe=<n>`.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Final

import numpy as np

from bench.clinical import COHORT_SEED, RUN_SEED
from bench.clinical_bound import (
    PHASE1_BLOCKS,
    REPLAN_EVERY_BLOCKS,
    ClairvoyantPlanner,
    FloatArray,
    _group_median_params,
)
from kernels.hovorka import N_INPUTS, step_block
from sim.controller import BolusCommand, ControllerInput, ControllerOutput, TempBasalCommand
from sim.metrics import Outcomes
from sim.person import (
    MG_DL_PER_MMOL_L,
    MMOL_PER_G_GLUCOSE,
    TherapySettings,
    VirtualPerson,
    make_cohort,
    steady_state,
)
from sim.runner import RunResult, run_cohort
from sim.scenarios import SCENARIOS, STEP_MIN

__all__ = [
    "ModelPredictiveController",
    "identify_model",
    "run_with_models",
]

RUN_IN_SEED: Final = 8  # other days than the evaluated ones (RUN_SEED)
RUN_IN_DAYS: Final = 7
DEFAULT_HOLD_MG_DL: Final = 90.0
DEFAULT_OBSERVER_GAIN: Final = 0.5  # share of the CGM's disagreement taken into the model's glucose
FIT_WINDOW_BLOCKS: Final = 72  # 6 h
FIT_WINDOW_EVERY_BLOCKS: Final = 12
FIT_GENERATIONS: Final = 30
FIT_POPULATION: Final = 40
FIT_ELITE: Final = 10
FIT_PRIOR_WEIGHT: Final = 50.0  # keeps poorly determined factors near the typical model
FIT_MAX_LOG_FACTOR: Final = 1.2  # each factor within e^±1.2 of the typical model
# identified columns of the parameter row (kernels.hovorka.PARAM_NAMES); None: the three
# insulin sensitivities together (their products with ka1–ka3, columns 7–9)
_FIT_COLUMNS: Final[tuple[int | None, ...]] = (1, 3, None, 10, 12, 13, 14)
_SENSITIVITY_COLUMNS: Final = (7, 8, 9)
_AG_COLUMN: Final = 13
_CGM_COLUMN: Final = 12  # state: interstitial glucose, mmol/L
_NOMINAL_MODIFIERS: Final = np.array([[1.0, 1.0, 0.0]])  # sensitivity, EGP, exercise uptake


class ModelPredictiveController:
    """The bound's planner on a model of the person, with an observer fed by the CGM."""

    def __init__(
        self,
        person: VirtualPerson,
        model_params: FloatArray,
        *,
        hold_mg_dl: float = DEFAULT_HOLD_MG_DL,
        correction_cap_basal_h: float | None = None,
        observer_gain: float = DEFAULT_OBSERVER_GAIN,
    ) -> None:
        self.therapy = therapy = person.therapy
        self.correction_cap_basal_h = correction_cap_basal_h
        self.observer_gain = observer_gain
        self._params = model_params
        # no day-to-day multipliers; the observer's state is in the model's own units
        self._planner = ClairvoyantPlanner(
            person,
            _NOMINAL_MODIFIERS,
            hold_mg_dl=hold_mg_dl,
            planning_params=model_params,
            state_vg_l=float(model_params[0]),
        )
        self._state = steady_state(model_params, therapy.target_mg_dl, therapy.basal_at(0))
        self._announced_g: dict[int, float] = {}  # block eaten → grams
        self._last_block: int | None = None
        self._last_rate_u_per_h = therapy.basal_at(0)
        self._last_bolus_u = 0.0

    def step(self, inp: ControllerInput) -> ControllerOutput | None:
        block = inp.t_min // STEP_MIN
        for carbs in inp.carbs:
            eaten = max(carbs.t_min // STEP_MIN, block)
            self._announced_g[eaten] = self._announced_g.get(eaten, 0.0) + carbs.carbs_g
        if self._last_block is not None:
            self._advance(self._last_block)
        self._last_block = block
        self._correct_towards(inp)
        self._last_rate_u_per_h = inp.pump.delivering_basal_u_per_h
        self._last_bolus_u = 0.0
        meal = bool(inp.carbs)
        if not meal and block % REPLAN_EVERY_BLOCKS != 0:
            return None
        out = self._plan(inp, block, meal=meal)
        if out.temp_basal is not None:
            self._last_rate_u_per_h = out.temp_basal.rate_u_per_h
        if out.bolus is not None:
            self._last_bolus_u = out.bolus.amount_u
        return out

    def _advance(self, block: int) -> None:
        """The model over the last 5 min, on what was delivered and eaten then."""
        inputs = np.zeros((1, N_INPUTS))
        inputs[0, 0] = (self._last_rate_u_per_h * STEP_MIN / 60.0 + self._last_bolus_u) * 1000.0
        inputs[0, 1] = self._announced_g.get(block, 0.0) * MMOL_PER_G_GLUCOSE
        inputs[0, 3:5] = 1.0
        state = np.ascontiguousarray(self._state[None, :])
        step_block(state, np.ascontiguousarray(self._params[None, :]), inputs, validate=False)
        self._state = state[0]

    def _correct_towards(self, inp: ControllerInput) -> None:
        reading = inp.cgm
        if reading is None or reading.flag is not None:
            return
        model_mg_dl = self._state[0] / self._params[0] * MG_DL_PER_MMOL_L
        disagreement_mg_dl = reading.glucose_mg_dl - self._state[_CGM_COLUMN] * MG_DL_PER_MMOL_L
        corrected_mg_dl = max(20.0, model_mg_dl + self.observer_gain * disagreement_mg_dl)
        self._state[0:2] *= corrected_mg_dl / model_mg_dl
        self._state[_CGM_COLUMN] += self.observer_gain * disagreement_mg_dl / MG_DL_PER_MMOL_L

    def _plan(self, inp: ControllerInput, block: int, *, meal: bool) -> ControllerOutput:
        chosen = self._planner.choose(self._state, block, self._announced_g, meal_announced=meal)
        scheduled = self.therapy.basal_at(inp.t_min % 1440)
        rate = min(scheduled * chosen.rate1_multiplier, self.therapy.max_basal_u_per_h)
        bolus_u = chosen.bolus_fraction_of_max * self.therapy.max_bolus_u
        if not meal and self.correction_cap_basal_h is not None:
            bolus_u = min(bolus_u, scheduled * self.correction_cap_basal_h)
        bolus_u = float(np.floor(bolus_u / 0.05 + 1e-9) * 0.05)
        return ControllerOutput(
            temp_basal=TempBasalCommand(round(rate, 2), PHASE1_BLOCKS * STEP_MIN),
            bolus=BolusCommand(bolus_u) if bolus_u >= 0.05 else None,
        )


def _true_states(person: VirtualPerson, run_in: RunResult, index: int) -> FloatArray:
    """The body's state at every step of the run-in, replayed from what went in."""
    steps = run_in.glucose_mg_dl.shape[1]
    plan = run_in.plans[index]
    inputs = np.zeros((steps, N_INPUTS))
    inputs[:, 0] = run_in.to_body_u[index] * 1000.0
    inputs[:, 1] = run_in.carbs_g[index] * MMOL_PER_G_GLUCOSE
    inputs[:, 2] = run_in.rescue_carbs_g[index] * MMOL_PER_G_GLUCOSE
    inputs[:, 3] = plan.si_mult[:steps]
    inputs[:, 4] = plan.egp_mult[:steps]
    inputs[:, 5] = plan.exercise_uptake_mmol_per_min[:steps]
    params = np.ascontiguousarray(person.params[None, :])
    state = np.ascontiguousarray(
        steady_state(person.params, person.therapy.target_mg_dl, person.therapy.basal_at(0))[
            None, :
        ]
    )
    states = np.empty((steps, state.shape[1]))
    for k in range(steps):
        states[k] = state[0]
        step_block(state, params, np.ascontiguousarray(inputs[k : k + 1]), validate=False)
    return states


def _with_factors(prior: FloatArray, log_factors: FloatArray) -> FloatArray:
    rows = np.repeat(prior[None, :], log_factors.shape[0], axis=0)
    for j, column in enumerate(_FIT_COLUMNS):
        factor = np.exp(log_factors[:, j])
        columns = _SENSITIVITY_COLUMNS if column is None else (column,)
        for c in columns:
            rows[:, c] *= factor
    rows[:, _AG_COLUMN] = np.minimum(rows[:, _AG_COLUMN], 1.0)
    result: FloatArray = rows
    return result


@dataclass(frozen=True, slots=True)
class Identified:
    params: FloatArray
    prior_error_mg_dl: float  # root-mean-square 6-h prediction error of the typical model
    fitted_error_mg_dl: float  # … of the identified one


def identify_model(
    person: VirtualPerson,
    people: list[VirtualPerson],
    run_in: RunResult,
    index: int,
    *,
    seed: int = 0,
) -> Identified:
    """Fit seven factors on the age group's typical model to the person's run-in (optimistic:
    windows start from the body's true state and are scored on true glucose)."""
    states = _true_states(person, run_in, index)
    steps = states.shape[0]
    glucose = run_in.glucose_mg_dl[index]
    starts = np.arange(0, steps - FIT_WINDOW_BLOCKS, FIT_WINDOW_EVERY_BLOCKS)
    windows = len(starts)
    known = np.zeros((steps, N_INPUTS))
    known[:, 0] = run_in.to_body_u[index] * 1000.0
    known[:, 1] = run_in.carbs_g[index] * MMOL_PER_G_GLUCOSE  # rescue carbs are not known
    known[:, 3:5] = 1.0
    prior = _group_median_params(person, people)
    true_vg_l = float(person.params[0])

    def squared_error(log_factors: FloatArray) -> FloatArray:
        rows = _with_factors(prior, log_factors)
        m = rows.shape[0]
        state = np.repeat(states[starts][None, :, :], m, axis=0).reshape(m * windows, -1)
        state[:, 0:2] *= np.repeat(rows[:, 0] / true_vg_l, windows)[:, None]
        state = np.ascontiguousarray(state)
        params = np.ascontiguousarray(np.repeat(rows, windows, axis=0))
        total = np.zeros(m * windows)
        for h in range(FIT_WINDOW_BLOCKS):
            inputs = np.ascontiguousarray(np.tile(known[starts + h], (m, 1)))
            step_block(state, params, inputs, validate=False)
            predicted = state[:, 0] / params[:, 0] * MG_DL_PER_MMOL_L
            total += (predicted - np.tile(glucose[starts + h + 1], m)) ** 2
        per_candidate: FloatArray = total.reshape(m, windows).mean(axis=1) / FIT_WINDOW_BLOCKS
        return per_candidate

    n = len(_FIT_COLUMNS)

    def score(log_factors: FloatArray) -> FloatArray:
        penalty: FloatArray = FIT_PRIOR_WEIGHT * (log_factors**2).sum(axis=1)
        return squared_error(log_factors) + penalty

    rng = np.random.default_rng([seed, index])
    mean = np.zeros(n)
    spread = np.full(n, 0.3)
    best_score = float(score(mean[None, :])[0])
    best = mean.copy()
    for _ in range(FIT_GENERATIONS):  # cross-entropy search: sample, keep the best, narrow
        population = np.clip(
            mean + spread * rng.standard_normal((FIT_POPULATION, n)),
            -FIT_MAX_LOG_FACTOR,
            FIT_MAX_LOG_FACTOR,
        )
        scores = score(population)
        order = np.argsort(scores)
        if scores[order[0]] < best_score:
            best_score = float(scores[order[0]])
            best = population[order[0]].copy()
        elite = population[order[:FIT_ELITE]]
        mean = elite.mean(axis=0)
        spread = np.maximum(elite.std(axis=0), 0.02)
    return Identified(
        params=_with_factors(prior, best[None, :])[0],
        prior_error_mg_dl=float(np.sqrt(squared_error(np.zeros((1, n)))[0])),
        fitted_error_mg_dl=float(np.sqrt(squared_error(best[None, :])[0])),
    )


class _Factory:
    """Picklable controller factory: one model per person (matched by their settings)."""

    __name__ = "model-mpc"

    def __init__(
        self,
        people: list[VirtualPerson],
        models: FloatArray,
        hold_mg_dl: float,
        correction_cap_basal_h: float | None,
    ) -> None:
        self._people = {id(p.therapy): (p, i) for i, p in enumerate(people)}
        self._models = models
        self._hold_mg_dl = hold_mg_dl
        self._cap = correction_cap_basal_h

    def __call__(self, therapy: TherapySettings) -> ModelPredictiveController:
        person, index = self._people[id(therapy)]
        return ModelPredictiveController(
            person,
            self._models[index],
            hold_mg_dl=self._hold_mg_dl,
            correction_cap_basal_h=self._cap,
        )


def run_with_models(
    people: list[VirtualPerson],
    models: FloatArray,
    *,
    days: int,
    hold_mg_dl: float = DEFAULT_HOLD_MG_DL,
    correction_cap_basal_h: float | None = None,
    seed: int = RUN_SEED,
) -> RunResult:
    """The standard scenario under the model-predictive controller, one model row per person."""
    factory = _Factory(people, models, hold_mg_dl, correction_cap_basal_h)
    return run_cohort(people, SCENARIOS["standard"], factory, seed=seed, days=days)


def _variant(args: tuple[str, int, float, FloatArray | None, float | None]) -> tuple[str, Outcomes]:
    name, days, hold_mg_dl, models, cap = args
    people = make_cohort(COHORT_SEED)
    if models is None:
        result = run_cohort(
            people, SCENARIOS["standard"], "dosing-engine", seed=RUN_SEED, days=days
        )
    else:
        result = run_with_models(
            people, models, days=days, hold_mg_dl=hold_mg_dl, correction_cap_basal_h=cap
        )
    return name, result.cohort_outcomes()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--days", type=int, default=7, help="standard days evaluated")
    parser.add_argument("--hold-mg-dl", type=float, default=DEFAULT_HOLD_MG_DL)
    parser.add_argument(
        "--correction-cap-basal-h",
        type=float,
        default=0.5,
        help="the capped variant's largest correction between meals, in hours of basal",
    )
    args = parser.parse_args()
    started = time.monotonic()
    people = make_cohort(COHORT_SEED)
    print(
        f"model-predictive control from the CGM: {len(people)} people (cohort seed "
        f"{COHORT_SEED}), standard, {args.days} days (run seed {RUN_SEED}), hold "
        f"{args.hold_mg_dl:g} mg/dL; identification from {RUN_IN_DAYS} days of the dosing engine "
        f"(run seed {RUN_IN_SEED})",
        flush=True,
    )
    run_in = run_cohort(
        people, SCENARIOS["standard"], "dosing-engine", seed=RUN_IN_SEED, days=RUN_IN_DAYS
    )
    identified = []
    for i, person in enumerate(people):
        fit = identify_model(person, people, run_in, i)
        identified.append(fit.params)
        print(
            f"  identified {person.person_id:14s} 6-h prediction error (RMS) "
            f"{fit.prior_error_mg_dl:5.1f} → {fit.fitted_error_mg_dl:5.1f} mg/dL "
            f"({time.monotonic() - started:.0f} s)",
            flush=True,
        )
    exact = np.stack([p.params for p in people])
    variants: list[tuple[str, int, float, FloatArray | None, float | None]] = [
        ("dosing engine", args.days, args.hold_mg_dl, None, None),
        ("exact model", args.days, args.hold_mg_dl, exact, None),
        ("exact model, corrections capped", args.days, args.hold_mg_dl, exact,
         args.correction_cap_basal_h),
        ("identified model", args.days, args.hold_mg_dl, np.stack(identified), None),
    ]  # fmt: skip
    results: dict[str, Outcomes] = {}
    with ProcessPoolExecutor(2) as pool:
        for name, o in pool.map(_variant, variants):
            results[name] = o
            print(
                f"  {name:34s} TIR {o.tir_pct:5.1f} %  TBR<70 {o.tbr70_pct:4.2f} %  "
                f"TBR<54 {o.tbr54_pct:4.2f} %  severe {o.severe_events}  "
                f"({time.monotonic() - started:.0f} s)",
                flush=True,
            )
    print("| controller | TIR % | TBR<70 % | TBR<54 % | TAR>180 % | severe |")
    print("|---|---|---|---|---|---|")
    for name, o in results.items():
        print(
            f"| {name} | {o.tir_pct:.1f} | {o.tbr70_pct:.2f} | {o.tbr54_pct:.2f} "
            f"| {o.tar180_pct:.1f} | {o.severe_events} |"
        )
    engine = results["dosing engine"]
    ex = results["exact model"]
    capped = results["exact model, corrections capped"]
    ident = results["identified model"]
    print(
        f"RESULT clinical_model_mpc days={args.days} hold_mg_dl={args.hold_mg_dl:g} "
        f"engine_tir={engine.tir_pct:.1f} engine_tbr70={engine.tbr70_pct:.2f} "
        f"exact_tir={ex.tir_pct:.1f} exact_tbr70={ex.tbr70_pct:.2f} "
        f"exact_capped_tir={capped.tir_pct:.1f} exact_capped_tbr70={capped.tbr70_pct:.2f} "
        f"identified_tir={ident.tir_pct:.1f} identified_tbr70={ident.tbr70_pct:.2f} "
        f"identified_severe={ident.severe_events}"
    )


if __name__ == "__main__":
    main()
