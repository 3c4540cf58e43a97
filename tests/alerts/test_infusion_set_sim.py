"""The infusion-set alert on simulated people (sim/), replayed as the alerts service sees them."""

from __future__ import annotations

import dataclasses

import pytest

from bench.infusion_set import replay
from services.alerts.rules import DEFAULT_INFUSION_SET
from sim.person import make_cohort
from sim.runner import run_cohort
from sim.scenarios import SCENARIOS


@pytest.mark.slow
def test_night_dislodgement_raises_the_alert_once_during_the_failure_and_normal_days_never() -> (
    None
):
    # One person alone: the cannula comes out in the evening (20:41 on day 1) with no meal
    # after it, so glucose creeps up on the lost basal while the loop's extra insulin is lost.
    # (A child who does not go low first: a reading < 70 holds the alert for 3 h, since a
    # rescue-carb rebound looks the same; cohort person 3 now does, and is raised at 308 mg/dL.)
    person = make_cohort()[2]
    run = run_cohort([person], SCENARIOS["cannula_dislodged"], "dosing-engine", seed=1)
    dislodged = run.plans[0].dislodge_t_min
    assert dislodged is not None
    new_set = min(
        e.t_min for e in run.pumps[0].history if e.kind == "site_change" and e.t_min > dislodged
    )
    raises = replay(run, 0, DEFAULT_INFUSION_SET)
    assert len(raises) == 1, raises
    assert dislodged < raises[0].t_min < new_set
    # The alert comes before the person would have noticed by themselves (an hour ≥ 300).
    assert raises[0].cgm_mg_dl < 300

    normal = run_cohort([person], SCENARIOS["standard"], "dosing-engine", seed=1)
    assert replay(normal, 0, DEFAULT_INFUSION_SET) == []


@pytest.mark.slow
def test_a_lost_meal_bolus_is_named_after_the_meal_and_normal_meals_never_are() -> None:
    # The whole cohort (each person's dislodgement time depends on their place in it); person 4
    # loses the cannula at 12:31 and eats 24 g 17 min later: the meal bolus goes nowhere and
    # glucose climbs past 300 within 2 h. The residual rule is silent near a meal; the
    # post-meal rule names the failure while glucose still climbs.
    people = make_cohort()
    run = run_cohort(people, SCENARIOS["cannula_dislodged"], "dosing-engine", seed=1)
    person = 4
    dislodged = run.plans[person].dislodge_t_min
    assert dislodged is not None
    meal = min(m.t_min for m in run.plans[person].meals if m.t_min >= dislodged)
    new_set = min(
        e.t_min
        for e in run.pumps[person].history
        if e.kind == "site_change" and e.t_min > dislodged
    )
    raises = replay(run, person, DEFAULT_INFUSION_SET)
    assert len(raises) == 1, raises
    assert meal + 90 <= raises[0].t_min < new_set
    assert raises[0].cgm_mg_dl >= 300
    without = dataclasses.replace(DEFAULT_INFUSION_SET, meal_min_glucose_mg_dl=None)
    assert replay(run, person, without) == []

    normal = run_cohort([people[person]], SCENARIOS["standard"], "dosing-engine", seed=1)
    assert replay(normal, 0, DEFAULT_INFUSION_SET) == []
