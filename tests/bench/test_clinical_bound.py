"""The clairvoyant bound plans on the person's true physiology and beats the open loop."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench.clinical import COHORT_SEED, RUN_SEED
from bench.clinical_bound import (
    ClairvoyantPlanner,
    FloatArray,
    median_child,
    misidentified_params,
    plot_days,
    run_bound,
)
from sim.person import VirtualPerson, make_cohort, steady_state
from sim.runner import run_cohort
from sim.scenarios import SCENARIOS, STEPS_PER_DAY


@pytest.fixture(scope="module")
def people() -> list[VirtualPerson]:
    return make_cohort(COHORT_SEED)


def _planner_at_target(
    person: VirtualPerson, hold_mg_dl: float | None = None
) -> tuple[ClairvoyantPlanner, FloatArray]:
    mods = np.tile(np.array([1.0, 1.0, 0.0]), (2 * STEPS_PER_DAY, 1))
    target = person.therapy.target_mg_dl
    state = steady_state(person.params, target, person.therapy.basal_at(0))
    planner = ClairvoyantPlanner(
        person, mods, hold_mg_dl=target if hold_mg_dl is None else hold_mg_dl
    )
    return planner, state


def _planned_insulin_u(planner: ClairvoyantPlanner, state: FloatArray) -> float:
    chosen = planner.choose(state, 0, {}, meal_announced=False)
    return sum(planner.insulin_u(chosen, k, k) for k in range(12))


def test_a_lower_hold_level_plans_more_insulin(people: list[VirtualPerson]) -> None:
    at_target, state = _planner_at_target(people[20])
    lower, _ = _planner_at_target(people[20], people[20].therapy.target_mg_dl - 20.0)
    assert _planned_insulin_u(lower, state) > _planned_insulin_u(at_target, state)


def test_an_announced_meal_gets_a_bolus_and_a_larger_one_for_more_carbs(
    people: list[VirtualPerson],
) -> None:
    planner, state = _planner_at_target(people[20])
    small = planner.choose(state, 0, {0: 30.0}, meal_announced=True)
    large = planner.choose(state, 0, {0: 80.0}, meal_announced=True)
    assert 0.0 < small.bolus_fraction_of_max < large.bolus_fraction_of_max


def test_the_bound_beats_the_open_loop_on_the_same_day(people: list[VirtualPerson]) -> None:
    group = [people[0], people[10], people[20]]  # a child, an adolescent, an adult
    standard = SCENARIOS["standard"]
    bound = run_bound(group, standard, seed=RUN_SEED, days=1)
    baseline = run_cohort(group, standard, "baseline", seed=RUN_SEED, days=1)
    for i in range(len(group)):
        planned = bound.person_outcomes(i)
        open_loop = baseline.person_outcomes(i)
        assert planned.tir_pct >= open_loop.tir_pct
        assert planned.tbr70_pct == 0.0


def test_two_days_of_the_median_child_are_drawn(
    people: list[VirtualPerson], tmp_path: Path
) -> None:
    group = [people[0], people[1], people[2]]
    standard = SCENARIOS["standard"]
    bound = run_bound(group, standard, seed=RUN_SEED, days=3)
    engine = run_cohort(group, standard, "dosing-engine", seed=RUN_SEED, days=3)
    tirs = sorted(engine.person_outcomes(i).tir_pct for i in range(3))
    chosen = median_child(engine)
    assert engine.person_outcomes(chosen).tir_pct == tirs[1]
    path = plot_days(bound, engine, chosen, tmp_path / "day.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="shorter"):
        plot_days(bound, engine, chosen, tmp_path / "late.png", first_day=3)


def test_a_misidentified_model_is_off_in_every_physiological_parameter(
    people: list[VirtualPerson],
) -> None:
    person = people[10]
    slightly = misidentified_params(person, 0.05, np.random.default_rng(1))
    badly = misidentified_params(person, 0.3, np.random.default_rng(1))
    for row in (slightly, badly):
        assert row.shape == person.params.shape
        assert row[13] <= 1.0  # the meal's bioavailability stays ≤ 1
        assert row[16] == person.params[16]  # the sensor's lag is not part of the model
    identified = [i for i in range(16) if i != 13]
    log_error_slight = np.abs(np.log(slightly[identified] / person.params[identified]))
    log_error_bad = np.abs(np.log(badly[identified] / person.params[identified]))
    assert np.all(log_error_slight > 0.0)
    assert log_error_bad.mean() > 3.0 * log_error_slight.mean()


def test_planning_on_a_badly_identified_model_costs_time_in_range(
    people: list[VirtualPerson],
) -> None:
    group = [people[0], people[3], people[10], people[13], people[20], people[23]]
    standard = SCENARIOS["standard"]
    own = run_bound(group, standard, seed=RUN_SEED, days=2, plan_day_to_day=False)
    off = run_bound(
        group, standard, seed=RUN_SEED, days=2, plan_day_to_day=False, parameter_error_cv=0.3
    )
    own_tir = np.mean([own.person_outcomes(i).tir_pct for i in range(len(group))])
    off_tir = np.mean([off.person_outcomes(i).tir_pct for i in range(len(group))])
    assert off_tir < own_tir - 2.0
