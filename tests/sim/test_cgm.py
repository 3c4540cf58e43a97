"""The simulated CGM: cadence, quantisation, limits, warm-up, errors that look like a sensor."""

from __future__ import annotations

import numpy as np

from sim.cgm import CgmErrorModel, CohortCgm
from sim.runner import run_cohort
from sim.scenarios import SCENARIOS


def test_readings_are_integers_within_40_400_every_5_minutes(cohort):
    result = run_cohort(cohort[:6], SCENARIOS["standard"], seed=3, days=2)
    cgm = result.cgm_mg_dl
    present = cgm[cgm >= 0]
    assert present.dtype.kind == "i"
    # read() extends one past each end so a value can be flagged LOW / HIGH
    assert present.min() >= 39
    assert present.max() <= 401
    assert (cgm >= 0).mean() > 0.9
    for value in (10, 39, 40, 250, 400, 401, 900):
        reading = CohortCgm.to_reading(0, min(max(value, 39), 401))
        assert 40 <= reading.glucose_mg_dl <= 400
        assert (reading.flag == "LOW") == (value < 40)
        assert (reading.flag == "HIGH") == (value > 400)


def test_error_is_small_unbiased_and_correlated():
    rng = np.random.default_rng(1)
    steps = 288 * 10
    cgm = CohortCgm(
        50, steps, rng, CgmErrorModel(compression_prob_per_night=0.0),
        start_session_age_min=np.full(50, 1000.0),
    )  # fmt: skip
    true = np.full(50, 120.0)
    err = np.array([cgm.read(k, true)[0] - 120 for k in range(steps)]).T
    assert abs(err.mean()) < 2.0
    assert 3.0 < err.std() < 15.0
    lag1 = np.corrcoef(err[:, :-1].ravel(), err[:, 1:].ravel())[0, 1]
    assert lag1 > 0.4  # errors come in runs, not independent draws


def test_no_readings_during_the_two_hour_warm_up():
    rng = np.random.default_rng(2)
    model = CgmErrorModel(dropout_prob=0.0, gaps_per_day=0.0, session_days=1.0)
    # session starts 30 minutes into the run
    cgm = CohortCgm(3, 288 * 2, rng, model, start_session_age_min=np.full(3, 1440.0 - 30.0))
    avail = cgm.available
    assert avail[:, :6].all()  # the old session's last 30 minutes
    assert not avail[:, 6 : 6 + 24].any()  # 2 h warm-up of the new sensor
    assert avail[:, 6 + 24 : 6 + 24 + 12].all()


def test_compression_lows_dip_readings_at_night_only():
    rng = np.random.default_rng(3)
    model = CgmErrorModel(
        compression_prob_per_night=1.0, johnson_lambda=0.0, gain_sd=0.0, offset_sd_mg_dl=0.0
    )
    cgm = CohortCgm(20, 288 * 3, rng, model, start_session_age_min=np.full(20, 1000.0))
    dips = cgm.offset < -10
    minute_of_day = (np.arange(288 * 3) * 5) % 1440
    assert dips.any(axis=1).all()
    assert (minute_of_day[np.nonzero(dips)[1]] < 8 * 60).all()
