"""Whole runs: determinism, a dislodged cannula, insulin mass balance, hub offline."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from kernels.hovorka import STATE_NAMES
from sim.controller import BolusCommand, ControllerOutput
from sim.controllers import CONTROLLERS, resolve_controller
from sim.person import steady_state
from sim.runner import rescue_carbs_g, run_cohort
from sim.scenarios import SCENARIOS, Scenario

S1, S2, PLASMA, CLEARED = (
    STATE_NAMES.index("s1_mu"),
    STATE_NAMES.index("s2_mu"),
    STATE_NAMES.index("plasma_insulin_mu_per_l"),
    STATE_NAMES.index("insulin_cleared_mu"),
)


def test_same_seed_gives_the_same_day_and_another_seed_does_not(cohort):
    people = cohort[::6]
    a = run_cohort(people, SCENARIOS["standard"], seed=5, days=1)
    b = run_cohort(people, SCENARIOS["standard"], seed=5, days=1)
    c = run_cohort(people, SCENARIOS["standard"], seed=6, days=1)
    np.testing.assert_array_equal(a.glucose_mg_dl, b.glucose_mg_dl)
    np.testing.assert_array_equal(a.cgm_mg_dl, b.cgm_mg_dl)
    assert [p.history for p in a.pumps] == [p.history for p in b.pumps]
    assert not np.array_equal(a.glucose_mg_dl, c.glucose_mg_dl)


def test_dislodged_cannula_glucose_rises_while_the_pump_log_looks_normal(cohort):
    people = [cohort[25]]
    quiet = Scenario("quiet", 1, "", meals=False, day_to_day=False, hypo_treatment=False)
    normal = run_cohort(people, quiet, seed=3)
    # dislodge at the very start: same everything else
    out = run_cohort(people, replace(quiet, cannula_dislodged=True), seed=3, days=2)
    t0 = out.plans[0].dislodge_t_min
    assert t0 is not None
    k0 = t0 // 5
    pump = out.pumps[0]
    assert pump.fault is None
    # the pump kept logging basal as if nothing happened
    basal_logged_after = sum(
        e.amount_u for e in pump.history if e.kind == "basal" and t0 < e.t_min <= t0 + 6 * 60
    )
    assert basal_logged_after == pytest.approx(normal.basal_u[0].sum() * 6 / 24, rel=0.1)
    assert out.to_body_u[0, k0 + 1 : k0 + 72].sum() == 0.0
    assert out.glucose_mg_dl[0, k0 + 72] > out.glucose_mg_dl[0, k0] + 40


def test_a_dislodged_cannula_is_fixed_once_and_insulin_works_again(cohort):
    people = cohort[::3]
    out = run_cohort(people, SCENARIOS["cannula_dislodged"], seed=1)
    for i in range(len(people)):
        t0 = out.plans[i].dislodge_t_min
        assert t0 is not None
        history = out.pumps[i].history
        changes = [e.t_min for e in history if e.kind == "site_change" and e.t_min > t0]
        assert changes, "the person changes the set once they notice"
        fixed = changes[0]
        # one change when noticed, then only the routine changes every 3 days (at 20:00)
        assert all(t % (3 * 1440) == 20 * 60 for t in changes[1:])
        assert len(changes) <= 3
        k = fixed // 5
        # after the new set, insulin reaches the body again and glucose comes down
        assert out.to_body_u[i, k + 1 : k + 25].sum() > 0.0
        assert out.glucose_mg_dl[i, k + 1 : k + 12 * 12].min() < out.glucose_mg_dl[i, k] - 60


def test_insulin_mass_balance(cohort):
    people = cohort[::3]
    result = run_cohort(people, SCENARIOS["standard"], seed=2, days=2)
    for i, pump in enumerate(result.pumps):
        person = result.people[i]
        pump.flush_basal_record(int(result.t_min[-1]) + 5)  # log the unfinished hour's basal too
        logged = sum(e.amount_u for e in pump.history if e.kind in ("basal", "bolus_delivered"))
        # the log accounts for every unit pumped, and the pump pumped basal + bolus
        assert logged == pytest.approx(pump.pumped_u, abs=1e-6)
        assert pump.pumped_u == pytest.approx(
            result.basal_u[i].sum() + result.bolus_u[i].sum(), abs=1e-9
        )
        assert pump.pumped_bolus_u == pytest.approx(
            sum(e.amount_u for e in pump.history if e.kind == "bolus_delivered"), abs=1e-6
        )
        # every unit that reached the body is in the depot, in plasma, or cleared
        y = result.final_state[i]
        y0 = steady_state(person.params, person.therapy.target_mg_dl, person.therapy.basal_at(0))
        vi_l = person.physiology.vi_l
        gained_mu = (y[S1] + y[S2] + y[PLASMA] * vi_l + y[CLEARED]) - (
            y0[S1] + y0[S2] + y0[PLASMA] * vi_l
        )
        assert gained_mu == pytest.approx(result.to_body_u[i].sum() * 1000, rel=1e-9)


def test_hub_offline_means_no_controller_calls_and_the_schedule_runs(cohort):
    calls: list[int] = []

    class Recorder:
        def __init__(self, therapy):
            self.therapy = therapy

        def step(self, inp):
            calls.append(inp.t_min)
            return

    result = run_cohort([cohort[0]], SCENARIOS["hub_offline"], Recorder, seed=4, days=1)
    offline = result.plans[0].offline
    assert offline.sum() == 24  # 2 h of 5-minute steps
    assert len(calls) == 288 - 24
    assert not set(calls) & set(np.flatnonzero(offline) * 5)
    assert result.basal_u[0, offline].sum() > 0


def test_controller_registry_resolves_names():
    assert "baseline" in CONTROLLERS
    assert resolve_controller("baseline") is CONTROLLERS["baseline"]
    with pytest.raises(ValueError, match="known: baseline"):
        resolve_controller("no-such-controller")


def test_a_low_is_treated_with_carbs_by_body_weight(cohort):
    # ISPAD: ≈ 0.3 g/kg, at most 15 g; a small child takes less than the rule of 15
    child = min((p for p in cohort if p.age_group == "child"), key=lambda p: p.weight_kg)
    adult = next(p for p in cohort if p.age_group == "adult")
    assert rescue_carbs_g(child.weight_kg) == round(0.3 * child.weight_kg) < 15
    assert rescue_carbs_g(adult.weight_kg) == 15

    class Overdose:
        def __init__(self, therapy):
            self.given = False

        def step(self, inp):
            if self.given:
                return None
            self.given = True
            return ControllerOutput(bolus=BolusCommand(3.0))

    fasting = Scenario("fasting", 1, "no food", meals=False, day_to_day=False)
    result = run_cohort([child], fasting, Overdose, seed=3)
    taken = result.rescue_carbs_g[0][result.rescue_carbs_g[0] > 0]
    assert len(taken) >= 1
    assert set(taken.tolist()) == {rescue_carbs_g(child.weight_kg)}


def test_pre_bolus_scenario_boluses_before_eating_and_lowers_the_peak(cohort):
    people = cohort[:3]  # children: their carbs act fastest against their insulin
    at_meal = run_cohort(people, SCENARIOS["standard"], seed=5, days=2)
    early = run_cohort(people, SCENARIOS["pre_bolus"], seed=5, days=2)
    for plan_at, plan_early in zip(at_meal.plans, early.plans, strict=True):
        # the same days: the same meals, each announced 15 min before it is eaten
        assert [m.t_min for m in plan_at.meals] == [m.t_min for m in plan_early.meals]
        assert all(m.announce_t_min == m.t_min - 15 for m in plan_early.meals)
    for i in range(len(people)):
        first_bolus_step = int(np.flatnonzero(early.bolus_u[i] > 0)[0])
        first_meal_step = early.plans[i].meals[0].t_min // 5
        assert first_bolus_step == first_meal_step - 3
    assert early.glucose_mg_dl.max(axis=1).mean() < at_meal.glucose_mg_dl.max(axis=1).mean() - 10
