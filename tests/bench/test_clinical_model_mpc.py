"""A model-predictive controller reading the CGM: identification and control on short runs."""

from __future__ import annotations

import numpy as np
import pytest

from bench.clinical import COHORT_SEED, RUN_SEED
from bench.clinical_model_mpc import identify_model, run_with_models
from sim.person import VirtualPerson, make_cohort
from sim.runner import run_cohort
from sim.scenarios import SCENARIOS


@pytest.fixture(scope="module")
def people() -> list[VirtualPerson]:
    return make_cohort(COHORT_SEED)


def test_identification_predicts_the_persons_glucose_better_than_the_typical_model(
    people: list[VirtualPerson],
) -> None:
    group = [people[2], people[21]]  # a child and an adult
    run_in = run_cohort(group, SCENARIOS["standard"], "dosing-engine", seed=8, days=2)
    fits = [identify_model(person, people, run_in, i) for i, person in enumerate(group)]
    for fit, person in zip(fits, group, strict=True):
        assert fit.fitted_error_mg_dl < fit.prior_error_mg_dl
        assert fit.params.shape == person.params.shape
        assert np.all(np.isfinite(fit.params))
    fitted_mg_dl = np.mean([f.fitted_error_mg_dl for f in fits])
    prior_mg_dl = np.mean([f.prior_error_mg_dl for f in fits])
    assert fitted_mg_dl < 0.8 * prior_mg_dl


def test_controlling_on_the_exact_model_keeps_the_cohort_in_range_and_out_of_lows(
    people: list[VirtualPerson],
) -> None:
    group = [people[0], people[10], people[20]]
    models = np.stack([p.params for p in group])
    mpc = run_with_models(group, models, days=2)
    baseline = run_cohort(group, SCENARIOS["standard"], "baseline", seed=RUN_SEED, days=2)
    mpc_tir = np.mean([mpc.person_outcomes(i).tir_pct for i in range(3)])
    baseline_tir = np.mean([baseline.person_outcomes(i).tir_pct for i in range(3)])
    assert mpc_tir > baseline_tir
    assert all(mpc.person_outcomes(i).severe_events == 0 for i in range(3))


def test_a_capped_correction_never_exceeds_half_an_hour_of_basal(
    people: list[VirtualPerson],
) -> None:
    person = people[20]
    models = person.params[None, :]
    capped = run_with_models([person], models, days=1, correction_cap_basal_h=0.5)
    meal_blocks = {
        m.announce_t_min // 5 for m in capped.plans[0].meals if m.announce_t_min is not None
    }
    corrections = [
        e for e in capped.pumps[0].history if e.kind == "bolus" and e.t_min // 5 not in meal_blocks
    ]
    assert corrections  # the planner does correct between meals
    for event in corrections:
        assert event.amount_u <= 0.5 * person.therapy.basal_at(event.t_min % 1440) + 1e-9
