"""Consensus metrics on traces whose answers are known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from sim.metrics import outcomes, severe_hypo_events


def test_time_in_ranges_mean_cv_and_gmi():
    # one day: 60 % at 120, 20 % at 200, 10 % at 260, 5 % at 60, 5 % at 50
    trace = np.repeat([120, 200, 260, 60, 50], [173, 58, 28, 14, 15]).astype(float)
    o = outcomes(trace, insulin_u=40.0)
    n = trace.size
    assert o.tir_pct == pytest.approx(100 * 173 / n)
    assert o.tar180_pct == pytest.approx(100 * (58 + 28) / n)
    assert o.tar250_pct == pytest.approx(100 * 28 / n)
    assert o.tbr70_pct == pytest.approx(100 * 29 / n)
    assert o.tbr54_pct == pytest.approx(100 * 15 / n)
    assert o.mean_mg_dl == pytest.approx(trace.mean())
    assert o.cv_pct == pytest.approx(100 * trace.std() / trace.mean())
    assert o.gmi_pct == pytest.approx(3.31 + 0.02392 * trace.mean())
    assert o.total_daily_insulin_u == pytest.approx(40.0)
    assert o.lbgi > 0
    assert o.hbgi > 0


def test_lbgi_and_hbgi_respond_to_the_right_side():
    flat = outcomes(np.full(288, 112.5))
    assert flat.lbgi < 0.01
    assert flat.hbgi < 0.01
    assert outcomes(np.full(288, 60.0)).lbgi > 5 > outcomes(np.full(288, 60.0)).hbgi
    assert outcomes(np.full(288, 300.0)).hbgi > 10


def test_severe_events_need_15_minutes_below_54():
    base = np.full(100, 100.0)
    short = base.copy()
    short[10:12] = 50  # 10 minutes
    assert severe_hypo_events(short) == 0
    one = base.copy()
    one[10:13] = 50  # 15 minutes
    assert severe_hypo_events(one) == 1
    rebound = one.copy()
    rebound[14:17] = 50  # back below after only 5 minutes above: the same event
    assert severe_hypo_events(rebound) == 1
    two = one.copy()
    two[30:34] = 45
    assert severe_hypo_events(two) == 2


def test_rejects_nonsense():
    with pytest.raises(ValueError, match="non-empty"):
        outcomes(np.array([]))
    with pytest.raises(ValueError, match="finite"):
        outcomes(np.array([100.0, np.nan]))
