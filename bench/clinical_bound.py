"""How far any controller can go in this simulator: a clairvoyant planner as an upper bound.

Run as `python -m bench.clinical_bound [--scenario NAME ...] [--days N]` (or
`make bench-clinical-bound`). The planner is given what no real controller has: each person's
true Hovorka state and parameters, their day-to-day sensitivity and dawn multipliers for the hours
ahead, and the exact carbs of every meal from the moment it is announced (at the first bite in
`standard`, 15 min earlier in `pre_bolus`). It does not know a meal before its announcement,
which is the one thing that separates it from a pre-bolus. It reads true blood glucose (no CGM
error or lag) and gives insulin straight to the body (no pump increments).

Every 15 min, and in the block a meal is announced, it simulates the next 5 h for a family of
plans (a bolus up to the person's max bolus, then a rate for 30 min and another for 30 min to
2 h, as a multiple of the scheduled basal up to the max basal, then the schedule) and keeps the
plan with the fewest 5-min steps outside 70–180 mg/dL (a step below 54 counts 10 times); among
equals, the one whose glucose stays closest to `hold_mg_dl`. So it can give a super bolus, a
correction or a zero temp whenever the future it sees calls for one, with none of brief §6's
automatic-dosing limits. The tie-break matters: it decides where glucose sits between meals,
and the lower that is, the more room the next meal has below 180 (with perfect foresight no
low follows). Its time in range is what knowing the person perfectly would buy; the
difference to the dosing engine's is what the engine loses by not knowing them.
`--plan-without-day-to-day` hides the day's sensitivity and dawn multipliers from the planner
(the body still has them), and `--plan-with-group-median` has it plan on a typical member of
the person's age group instead of the person, to show what each part of the knowledge is
worth. `--plan-with-parameter-error CV` has it plan on the person's own model with every
physiological parameter off by a log-normal factor of that coefficient of variation: how exact a
per-person identified model would have to be.

Ends with `RESULT clinical_bound scenario=<first scenario> tir=<%> tbr70=<%> tbr54=<%>
severe=<n>`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Final

import matplotlib as mpl
import numpy as np
import numpy.typing as npt

mpl.use("Agg")

import matplotlib.pyplot as plt

from bench.clinical import COHORT_SEED, RUN_SEED
from kernels.hovorka import N_INPUTS, step_block
from sim.metrics import Outcomes, mean_outcomes, outcomes
from sim.person import (
    MG_DL_PER_MMOL_L,
    MMOL_PER_G_GLUCOSE,
    VirtualPerson,
    make_cohort,
    steady_state,
)
from sim.runner import RunResult, rescue_carbs_g, run_cohort
from sim.scenarios import SCENARIOS, STEP_MIN, STEPS_PER_DAY, PersonPlan, Scenario, plan

__all__ = [
    "BoundResult",
    "Candidate",
    "ClairvoyantPlanner",
    "FloatArray",
    "median_child",
    "misidentified_params",
    "plot_days",
    "run_bound",
]

DAY_PLOT: Final = Path(__file__).resolve().parents[1] / "docs" / "img" / "clinical_bound_day.png"

FloatArray = npt.NDArray[np.float64]

HORIZON_BLOCKS: Final = 60  # 5 h: a meal bolus has done nearly all its work by then
REPLAN_EVERY_BLOCKS: Final = 3
PHASE1_BLOCKS: Final = 6  # the first rate runs 30 min, like a temp basal
LOW_MG_DL: Final = 70.0
HIGH_MG_DL: Final = 180.0
SEVERE_MG_DL: Final = 54.0
SEVERE_WEIGHT: Final = 10.0
RESCUE_BELOW_MG_DL: Final = 70.0
RESCUE_RECHECK_BLOCKS: Final = 3
DEFAULT_HOLD_MG_DL: Final = 80.0  # the lowest correction target the gateway accepts
TIE_BREAK_WEIGHT: Final = 1e-6  # far below one step out of range


@dataclass(frozen=True, slots=True)
class Candidate:
    """One plan: a bolus now, then two rates as multiples of the scheduled basal."""

    bolus_fraction_of_max: float
    rate1_multiplier: float  # for the first 30 min
    rate2_multiplier: float  # for the next `phase2_blocks` blocks
    phase2_blocks: int


def _family(bolus_fractions: tuple[float, ...], phase2: tuple[int, ...]) -> list[Candidate]:
    rates1 = (0.0, 0.5, 1.0, 2.0, 3.0, 4.0)
    rates2 = (0.0, 0.5, 1.0)
    family = [
        Candidate(b, r1, r2, d)
        for b in bolus_fractions
        for r1 in rates1
        for r2 in rates2
        for d in phase2
    ]
    # exact ties (flat glucose) go to the first plan: the schedule
    family.sort(key=lambda c: (c.bolus_fraction_of_max, c.rate1_multiplier != 1.0,
                               c.rate2_multiplier != 1.0))  # fmt: skip
    return family


class _Family:
    """Candidates as columns, so a whole family steps through the kernel at once."""

    def __init__(self, candidates: list[Candidate]) -> None:
        self.candidates = candidates
        self.bolus_fraction = np.array([c.bolus_fraction_of_max for c in candidates])
        self.rate1 = np.array([c.rate1_multiplier for c in candidates])
        self.rate2 = np.array([c.rate2_multiplier for c in candidates])
        self.phase2_end = PHASE1_BLOCKS + np.array([c.phase2_blocks for c in candidates])


MEAL_FAMILY: Final = _Family(
    _family(tuple(float(x) for x in np.linspace(0.0, 1.0, 21)), (6, 12, 24))
)
BETWEEN_MEALS_FAMILY: Final = _Family(_family((0.0, 0.02, 0.05, 0.1, 0.2), (6,)))


class ClairvoyantPlanner:
    """Chooses plans for one person by simulating every candidate on their true physiology."""

    def __init__(
        self,
        person: VirtualPerson,
        modifiers: FloatArray,  # (blocks, 3): sensitivity, EGP multipliers, exercise uptake
        *,
        hold_mg_dl: float = DEFAULT_HOLD_MG_DL,
        planning_params: FloatArray | None = None,
        state_vg_l: float | None = None,  # glucose volume of the states given to `choose`
    ) -> None:
        # states come from the body (the person's volume) unless told otherwise
        self._state_vg_l = float(person.params[0]) if state_vg_l is None else state_vg_l
        self._params = person.params if planning_params is None else planning_params
        self._modifiers = modifiers
        self.hold_mg_dl = hold_mg_dl
        therapy = person.therapy
        self._scheduled_u_per_h = np.array(
            [therapy.basal_at(k * STEP_MIN % 1440) for k in range(STEPS_PER_DAY)]
        )
        self.max_bolus_u = therapy.max_bolus_u
        self.max_basal_u_per_h = therapy.max_basal_u_per_h

    def modifiers_at(self, block: int) -> FloatArray:
        row: FloatArray = self._modifiers[min(block, self._modifiers.shape[0] - 1)]
        return row

    def insulin_u(self, candidate: Candidate, block: int, blocks_since_plan: int) -> float:
        """Insulin the plan gives in one 5-min block (the bolus in the plan's first block)."""
        return float(self._family_insulin_u(_Family([candidate]), block, blocks_since_plan)[0])

    def _family_insulin_u(self, family: _Family, block: int, blocks_since_plan: int) -> FloatArray:
        """Insulin each plan of `family` gives in one 5-min block: what is simulated and what
        is given come from this one rule."""
        h = blocks_since_plan
        if h < PHASE1_BLOCKS:
            multiplier = family.rate1
        else:
            multiplier = np.where(h < family.phase2_end, family.rate2, 1.0)
        scheduled = float(self._scheduled_u_per_h[block % STEPS_PER_DAY])
        units: FloatArray = np.minimum(scheduled * multiplier, self.max_basal_u_per_h)
        units = units * STEP_MIN / 60.0
        if h == 0:
            units = units + family.bolus_fraction * self.max_bolus_u
        return units

    def choose(
        self,
        state: FloatArray,
        block: int,
        known_meals_g: dict[int, float],
        *,
        meal_announced: bool,
    ) -> Candidate:
        """The plan with the fewest steps out of range over the horizon, from `state`."""
        family = MEAL_FAMILY if meal_announced else BETWEEN_MEALS_FAMILY
        m = len(family.candidates)
        start = state.copy()
        # another model's glucose volume: start from the same glucose concentration
        start[0:2] *= self._params[0] / self._state_vg_l
        states = np.ascontiguousarray(np.repeat(start[None, :], m, axis=0))
        params = np.ascontiguousarray(np.repeat(self._params[None, :], m, axis=0))
        inputs = np.zeros((m, N_INPUTS))
        cost = np.zeros(m)
        for h in range(HORIZON_BLOCKS):
            k = block + h
            inputs[:, 0] = self._family_insulin_u(family, k, h) * 1000.0
            inputs[:, 1] = known_meals_g.get(k, 0.0) * MMOL_PER_G_GLUCOSE
            inputs[:, 3:6] = self.modifiers_at(k)
            step_block(states, params, inputs, validate=False)
            glucose = states[:, 0] / params[:, 0] * MG_DL_PER_MMOL_L
            cost += (glucose < LOW_MG_DL) + (glucose > HIGH_MG_DL)
            cost += SEVERE_WEIGHT * (glucose < SEVERE_MG_DL)
            cost += TIE_BREAK_WEIGHT * np.abs(glucose - self.hold_mg_dl)
        return family.candidates[int(np.argmin(cost))]


@dataclass
class BoundResult:
    scenario: Scenario
    people: list[VirtualPerson]
    glucose_mg_dl: FloatArray  # true blood glucose per person and 5-min step
    insulin_u: FloatArray

    def person_outcomes(self, i: int) -> Outcomes:
        return outcomes(self.glucose_mg_dl[i], float(self.insulin_u[i].sum()))


_PER_KG_PARAMS: Final = (0, 1, 3, 11)  # vg, f01, egp0, vi scale with weight (sim.person)


def _group_median_params(person: VirtualPerson, people: list[VirtualPerson]) -> FloatArray:
    """A typical member of the person's age group, at the person's weight."""
    group = [p for p in people if p.age_group == person.age_group]
    rows = np.stack([p.params for p in group])
    weights = np.array([p.weight_kg for p in group])
    rows[:, _PER_KG_PARAMS] /= weights[:, None]
    typical: FloatArray = np.median(rows, axis=0)
    typical[list(_PER_KG_PARAMS)] *= person.weight_kg
    return typical


# what a per-person identified model would get wrong: every physiological parameter, not the
# body weight, the sensor's lag or the kidney's threshold (sim.person.Physiology)
_NOT_IDENTIFIED: Final = frozenset(
    {"weight_kg", "tau_cgm_min", "renal_per_min", "renal_threshold_mmol_l"}
)


def misidentified_params(person: VirtualPerson, cv: float, rng: np.random.Generator) -> FloatArray:
    """The person's own model with each physiological parameter off by a log-normal factor
    (median 1, coefficient of variation `cv`), the meal's bioavailability kept ≤ 1."""
    sigma = float(np.sqrt(np.log1p(cv * cv)))
    changed: dict[str, float] = {}
    for field in fields(person.physiology):
        if field.name in _NOT_IDENTIFIED:
            continue
        value = float(getattr(person.physiology, field.name))
        changed[field.name] = value * float(np.exp(rng.normal(0.0, sigma)))
    changed["ag"] = min(changed["ag"], 1.0)
    return replace(person.physiology, **changed).as_array()


def _modifiers(person_plan: PersonPlan, blocks: int) -> FloatArray:
    mods = np.empty((blocks + HORIZON_BLOCKS, 3))
    for col, series in enumerate(
        (person_plan.si_mult, person_plan.egp_mult, person_plan.exercise_uptake_mmol_per_min)
    ):
        mods[:blocks, col] = series[:blocks]
        mods[blocks:, col] = series[blocks - 1]
    return mods


def run_bound(
    people: list[VirtualPerson],
    scenario: Scenario,
    *,
    seed: int = RUN_SEED,
    days: int | None = None,
    hold_mg_dl: float = DEFAULT_HOLD_MG_DL,
    plan_day_to_day: bool = True,
    plan_with_group_median: bool = False,
    parameter_error_cv: float = 0.0,
    progress: bool = False,
) -> BoundResult:
    """The clairvoyant planner over `scenario` (the same meals and days as `run_cohort`).

    `plan_day_to_day=False`: the planner assumes multipliers of 1 and no exercise; the body
    still gets the scenario's. `plan_with_group_median=True`: the planner simulates a typical
    member of the person's age group (each parameter's median over the group, per-kg ones at the
    person's weight) instead of the person.
    """
    days = scenario.days if days is None else days
    blocks = days * STEPS_PER_DAY
    n = len(people)
    plans = [plan(scenario, p, np.random.default_rng([seed, i])) for i, p in enumerate(people)]
    true_modifiers = [_modifiers(pl, blocks) for pl in plans]
    nominal = np.tile(np.array([1.0, 1.0, 0.0]), (blocks + HORIZON_BLOCKS, 1))
    error_rng = np.random.default_rng([seed, 1_000_003])

    def planning_params(person: VirtualPerson) -> FloatArray | None:
        if plan_with_group_median:
            return _group_median_params(person, people)
        if parameter_error_cv > 0:
            return misidentified_params(person, parameter_error_cv, error_rng)
        return None

    planners = [
        ClairvoyantPlanner(
            p,
            mods if plan_day_to_day else nominal,
            hold_mg_dl=hold_mg_dl,
            planning_params=planning_params(p),
        )
        for p, mods in zip(people, true_modifiers, strict=True)
    ]
    params = np.ascontiguousarray(np.stack([p.params for p in people]))
    state = np.ascontiguousarray(
        np.stack(
            [steady_state(p.params, p.therapy.target_mg_dl, p.therapy.basal_at(0)) for p in people]
        )
    )
    eaten_g: list[dict[int, float]] = [{} for _ in range(n)]
    announced_at: list[dict[int, list[int]]] = [{} for _ in range(n)]
    for i, pl in enumerate(plans):
        for meal in pl.meals:
            eat_block = meal.t_min // STEP_MIN
            eaten_g[i][eat_block] = eaten_g[i].get(eat_block, 0.0) + meal.carbs_g
            if meal.announce_t_min is not None:
                at = max(0, meal.announce_t_min) // STEP_MIN
                announced_at[i].setdefault(at, []).append(eat_block)
    known: list[dict[int, float]] = [{} for _ in range(n)]
    current: list[Candidate | None] = [None] * n
    plan_block = [0] * n
    next_rescue = [0] * n
    rescue_g = [rescue_carbs_g(p.weight_kg) for p in people]
    glucose = np.empty((n, blocks))
    insulin = np.zeros((n, blocks))
    inputs = np.zeros((n, N_INPUTS))
    started = time.monotonic()
    for k in range(blocks):
        g_now = state[:, 0] / params[:, 0] * MG_DL_PER_MMOL_L
        glucose[:, k] = g_now
        for i, planner in enumerate(planners):
            new_meals = announced_at[i].get(k, [])
            for eat_block in new_meals:
                known[i][eat_block] = eaten_g[i][eat_block]
            known[i] = {b: g for b, g in known[i].items() if b >= k}
            chosen = current[i]
            if chosen is None or new_meals or k - plan_block[i] >= REPLAN_EVERY_BLOCKS:
                chosen = planner.choose(state[i], k, known[i], meal_announced=bool(new_meals))
                current[i] = chosen
                plan_block[i] = k
            fast_g = 0.0
            if g_now[i] < RESCUE_BELOW_MG_DL and k >= next_rescue[i]:
                fast_g = rescue_g[i]
                next_rescue[i] = k + RESCUE_RECHECK_BLOCKS
            insulin[i, k] = planner.insulin_u(chosen, k, k - plan_block[i])
            inputs[i, 0] = insulin[i, k] * 1000.0
            inputs[i, 1] = eaten_g[i].get(k, 0.0) * MMOL_PER_G_GLUCOSE
            inputs[i, 2] = fast_g * MMOL_PER_G_GLUCOSE
            inputs[i, 3:6] = true_modifiers[i][k]
        step_block(state, params, inputs, validate=False)
        if progress and (k + 1) % STEPS_PER_DAY == 0:
            elapsed = time.monotonic() - started
            print(f"  {scenario.name}: day {(k + 1) // STEPS_PER_DAY}/{days} ({elapsed:.0f} s)",
                  flush=True)  # fmt: skip
    return BoundResult(scenario, people, glucose, insulin)


def _summary(result: BoundResult) -> Outcomes:
    per = [result.person_outcomes(i) for i in range(len(result.people))]
    groups: dict[str, list[Outcomes]] = {}
    for person, o in zip(result.people, per, strict=True):
        groups.setdefault(person.age_group, []).append(o)
    print(f"| {result.scenario.name} | group | TIR % | TBR<70 % | TBR<54 % | TAR>180 % | severe |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in [*groups.items(), ("cohort", per)]:
        print(
            f"| {result.scenario.name} | {name} | {np.mean([o.tir_pct for o in rows]):.1f} "
            f"| {np.mean([o.tbr70_pct for o in rows]):.2f} "
            f"| {np.mean([o.tbr54_pct for o in rows]):.2f} "
            f"| {np.mean([o.tar180_pct for o in rows]):.1f} "
            f"| {sum(o.severe_events for o in rows)} |"
        )
    return mean_outcomes(per)


def median_child(engine: RunResult) -> int:
    """The child whose TIR under the engine is the children's median (the plotted person)."""
    children = [i for i, p in enumerate(engine.people) if p.age_group == "child"]
    children.sort(key=lambda i: engine.person_outcomes(i).tir_pct)
    return children[len(children) // 2]


def plot_days(
    bound: BoundResult, engine: RunResult, person: int, path: Path, *, first_day: int = 1
) -> Path:
    """Two days of one person: true glucose and insulin, the planner against the engine."""
    start = first_day * STEPS_PER_DAY
    stop = min(start + 2 * STEPS_PER_DAY, bound.glucose_mg_dl.shape[1])
    if stop <= start:
        raise ValueError("the runs are shorter than the days to plot")
    hours = np.arange(start, stop) * STEP_MIN / 60.0
    planner_g = bound.glucose_mg_dl[person, start:stop]
    engine_g = engine.glucose_mg_dl[person, start:stop]
    engine_u = engine.basal_u[person, start:stop] + engine.bolus_u[person, start:stop]
    fig, (ax_g, ax_u) = plt.subplots(
        2, 1, figsize=(12, 7), sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    ax_g.axhspan(70, 180, color="tab:green", alpha=0.08, label="70–180 mg/dL")

    def tir(g: FloatArray) -> float:
        return float(np.mean((g >= 70) & (g <= 180)) * 100)

    ax_g.plot(hours, engine_g, color="tab:blue", label=f"dosing engine (TIR {tir(engine_g):.0f} %)")
    ax_g.plot(hours, planner_g, color="tab:orange",
              label=f"clairvoyant planner (TIR {tir(planner_g):.0f} %)")  # fmt: skip
    carbs = engine.carbs_g[person, start:stop]
    for h, g in zip(hours[carbs > 0], carbs[carbs > 0], strict=True):
        ax_g.annotate(f"{g:.0f} g", (h, 40), ha="center", fontsize=8, color="tab:brown")
        ax_g.axvline(h, color="tab:brown", lw=0.6, alpha=0.5)
    ax_g.set_ylabel("true glucose, mg/dL")
    ax_g.set_ylim(35, max(260.0, float(max(planner_g.max(), engine_g.max())) + 10))
    ax_g.legend(loc="upper right", fontsize=9)
    ax_g.grid(alpha=0.3)
    person_id = bound.people[person].person_id
    ax_g.set_title(
        f"{person_id}, {bound.scenario.name} days {first_day + 1}–{first_day + 2}: meals bolused "
        "at the first bite; the planner knows the person's physiology, the engine does not"
    )
    ax_u.step(hours, engine_u, where="post", color="tab:blue", lw=1)
    ax_u.step(hours, bound.insulin_u[person, start:stop], where="post", color="tab:orange", lw=1)
    ax_u.set_yscale("symlog", linthresh=0.1)
    ax_u.set_ylabel("insulin per 5 min, U")
    ax_u.set_xlabel("hours since the start of the run")
    ax_u.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _physiology_label(group_median: bool, error_cv: float) -> str:
    if group_median:
        return "of the age group"
    if error_cv > 0:
        return f"the person's, each parameter off by a log-normal CV {error_cv:g}"
    return "the person"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenario", nargs="+", default=["standard", "pre_bolus"],
                        choices=sorted(SCENARIOS))  # fmt: skip
    parser.add_argument("--days", type=int, default=None, help="default: the scenario's days")
    parser.add_argument(
        "--hold-mg-dl",
        type=float,
        default=DEFAULT_HOLD_MG_DL,
        help="where the planner keeps glucose among equally good plans",
    )
    parser.add_argument(
        "--plan-with-group-median",
        action="store_true",
        help="plan on a typical member of the person's age group instead of the person",
    )
    parser.add_argument(
        "--plan-with-parameter-error",
        type=float,
        default=0.0,
        metavar="CV",
        help="plan on the person's own model with each parameter off by this log-normal CV",
    )
    parser.add_argument(
        "--plan-without-day-to-day",
        action="store_true",
        help="hide the day's sensitivity and dawn multipliers from the planner",
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=DAY_PLOT,
        help="where to draw two days of one child, planner against engine (standard only)",
    )
    args = parser.parse_args()
    people = make_cohort(COHORT_SEED)
    print(
        f"clairvoyant bound: {len(people)} people (cohort seed {COHORT_SEED}, run seed "
        f"{RUN_SEED}), true glucose, meals known from their announcement, hold "
        f"{args.hold_mg_dl:g} mg/dL, day-to-day "
        f"{'hidden' if args.plan_without_day_to_day else 'known'}, physiology "
        f"{_physiology_label(args.plan_with_group_median, args.plan_with_parameter_error)}"
    )
    first: tuple[str, Outcomes] | None = None
    for name in args.scenario:
        started = time.monotonic()
        result = run_bound(
            people,
            SCENARIOS[name],
            days=args.days,
            hold_mg_dl=args.hold_mg_dl,
            plan_day_to_day=not args.plan_without_day_to_day,
            plan_with_group_median=args.plan_with_group_median,
            parameter_error_cv=args.plan_with_parameter_error,
            progress=True,
        )
        cohort = _summary(result)
        print(f"  ({time.monotonic() - started:.0f} s)")
        if name == "standard" and args.plot is not None:
            engine = run_cohort(people, SCENARIOS[name], "dosing-engine", seed=RUN_SEED,
                                days=args.days)  # fmt: skip
            plotted = plot_days(result, engine, median_child(engine), args.plot)
            print(f"  plot: {plotted}")
        if first is None:
            first = (name, cohort)
    assert first is not None
    name, o = first
    print(
        f"RESULT clinical_bound scenario={name} hold_mg_dl={args.hold_mg_dl:g} "
        f"tir={o.tir_pct:.1f} tbr70={o.tbr70_pct:.2f} tbr54={o.tbr54_pct:.2f} "
        f"severe={o.severe_events}"
    )


if __name__ == "__main__":
    main()
