"""The open-loop baseline: bolus wizard arithmetic, IOB, corrections, limits."""

from __future__ import annotations

import pytest

from sim.cgm import CgmReading
from sim.controller import CarbAnnouncement, ControllerInput
from sim.controllers.baseline import BaselineController, insulin_on_board_fraction
from sim.pump import Pump


def _inp(pump, t, glucose, carbs=()):
    hist = tuple(pump.history)
    return ControllerInput(t, CgmReading(t, glucose), pump.status(t), hist, tuple(carbs))


def test_iob_curve_starts_full_and_ends_empty():
    assert insulin_on_board_fraction(0, 360, 75) == 1.0
    assert insulin_on_board_fraction(360, 360, 75) == 0.0
    values = [insulin_on_board_fraction(t, 360, 75) for t in range(0, 361, 30)]
    assert values == sorted(values, reverse=True)
    assert 0.3 < insulin_on_board_fraction(120, 360, 75) < 0.8


def test_meal_bolus_is_carbs_over_ratio_plus_correction(cohort):
    th = cohort[25].therapy
    ctl = BaselineController(th)
    pump = Pump(th)
    out = ctl.step(_inp(pump, 0, int(th.target_mg_dl), [CarbAnnouncement(0, 60.0)]))
    assert out is not None
    assert out.bolus is not None
    expected = min(60.0 / th.carb_ratio_g_per_u, th.max_bolus_u)
    assert out.bolus.amount_u == pytest.approx(expected, abs=0.05)
    ctl2 = BaselineController(th)
    high = int(th.target_mg_dl + 2 * th.isf_mg_dl_per_u)
    out2 = ctl2.step(_inp(pump, 0, high, [CarbAnnouncement(0, 60.0)]))
    assert out2 is not None
    assert out2.bolus is not None
    assert out2.bolus.amount_u == pytest.approx(min(expected + 2.0, th.max_bolus_u), abs=0.05)


def test_correction_only_after_two_hours_high_and_minus_iob(cohort):
    th = cohort[25].therapy
    ctl = BaselineController(th)
    pump = Pump(th)
    for t in range(0, 120, 5):
        assert ctl.step(_inp(pump, t, 300)) is None
    out = ctl.step(_inp(pump, 120, 300))
    assert out is not None
    assert out.bolus is not None
    amount = out.bolus.amount_u
    assert amount == pytest.approx(
        min((300 - th.target_mg_dl) / th.isf_mg_dl_per_u, th.max_bolus_u), abs=0.05
    )
    pump.bolus(120, amount)
    # the next check sees that insulin on board and waits
    for t in range(125, 240, 5):
        assert ctl.step(_inp(pump, t, 300)) is None
