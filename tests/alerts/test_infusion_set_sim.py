"""The infusion-set alert on simulated people (sim/), replayed as the alerts service sees them."""

from __future__ import annotations

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
