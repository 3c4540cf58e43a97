"""Falling faster than expected (kernels.increase_margin, oref0's "Min. Delta < Exp. Delta"): no
increase while glucose falls faster than the insulin on board explains, or falls ≥ 2 mg/dL per
5 min while insulin is acting; the same in the packed path the in-silico bench runs."""

from __future__ import annotations

import numpy as np
import pytest

from kernels import increase_margin
from kernels._layout import Out
from kernels.decision import CarbEntry, DecisionInput, Dose, DoseKind, decide, pack
from kernels.increase_margin import (
    FALLING_FASTER_CODE,
    decide_packed_with_margin,
    decide_with_margin,
    expected_delta_mg_dl,
    min_delta_mg_dl,
)
from tests.dosing_engine.conftest import KERNEL_NOW_S, KERNEL_SCHEDULED_U_PER_H, closed_loop_input

SCHEDULED = KERNEL_SCHEDULED_U_PER_H


def _high_then(tail: list[float]) -> DecisionInput:
    """3 h at 250 mg/dL, then `tail` (the newest readings), no insulin on board."""
    return closed_loop_input([250.0] * (36 - len(tail)) + tail)


def test_min_delta_is_the_smaller_of_the_last_change_and_the_short_average() -> None:
    t = np.array([0.0, 300.0, 600.0])
    assert min_delta_mg_dl(t, np.array([100.0, 110.0, 120.0])) == pytest.approx(10.0)
    # last change −20; against 10 min ago −30 over 10 min = −15 per 5 min; average −17.5
    assert min_delta_mg_dl(t, np.array([130.0, 120.0, 100.0])) == pytest.approx(-20.0)
    assert min_delta_mg_dl(np.array([0.0]), np.array([100.0])) is None
    # no reading 2.5–7.5 min before the newest: no delta
    assert min_delta_mg_dl(np.array([0.0, 900.0]), np.array([100.0, 90.0])) is None


def test_expected_delta_is_bgi_plus_a_two_hour_glide_to_target() -> None:
    # 0.02 U/min acting, ISF 50 → −5 mg/dL per 5 min; eventual 230 vs target 110 → −5
    got = expected_delta_mg_dl(
        activity_u_per_min=0.02,
        isf_mg_dl_per_u=50.0,
        sensitivity_ratio=1.0,
        target_mg_dl=110.0,
        eventual_bg_mg_dl=230.0,
    )
    assert got == pytest.approx(-10.0)


def test_an_increase_is_withheld_while_glucose_falls_faster_than_expected() -> None:
    falling = _high_then([240.0])  # −10 per 5 min with no insulin on board
    plain = decide(falling)
    assert plain.smb_u > 0  # the kernel alone increases
    assert plain.rate_u_per_h > SCHEDULED
    guarded = decide_with_margin(falling, 0.0, post_low_no_smb_min=0.0)
    assert guarded.reasons[0].code == FALLING_FASTER_CODE
    assert guarded.smb_u == 0.0
    assert guarded.rate_u_per_h <= SCHEDULED
    assert guarded.iob_u == pytest.approx(plain.iob_u)


def test_a_fall_the_forecast_expects_keeps_the_increase() -> None:
    # −5 per 5 min against an expected −5.4 (eventual 240, target 110, no insulin acting)
    slow = _high_then([245.0])
    plain = decide(slow)
    guarded = decide_with_margin(slow, 0.0, post_low_no_smb_min=0.0)
    assert all(r.code != FALLING_FASTER_CODE for r in guarded.reasons)
    assert (guarded.smb_u, guarded.rate_u_per_h) == (plain.smb_u, plain.rate_u_per_h)


def test_a_fall_while_insulin_acts_withholds_the_increase(monkeypatch: pytest.MonkeyPatch) -> None:
    # a meal and its bolus 90 min ago: the forecast still sees carbs to come and asks for more,
    # while glucose already falls 2 mg/dL per 5 min with the bolus acting
    meal_s = KERNEL_NOW_S - 5400.0
    inp = _high_then([248.0]).model_copy(
        update={
            "doses": (Dose(t_s=meal_s, kind=DoseKind.BOLUS, amount=2.0),),
            "carbs": (CarbEntry(t_s=meal_s, carbs_g=80.0),),
        }
    )
    plain = decide(inp)
    assert plain.smb_u > 0
    assert plain.rate_u_per_h > SCHEDULED
    guarded = decide_with_margin(inp, 0.0, post_low_no_smb_min=0.0)
    assert guarded.reasons[0].code == FALLING_FASTER_CODE
    assert (guarded.smb_u, guarded.rate_u_per_h <= SCHEDULED) == (0.0, True)
    # oref0's comparison alone lets this one through: the eventual glucose is far above target
    monkeypatch.setattr(increase_margin, "FALLING_WHILE_ACTING_MG_DL_PER_5_MIN", 100.0)
    oref0_only = decide_with_margin(inp, 0.0, post_low_no_smb_min=0.0)
    assert (oref0_only.smb_u, oref0_only.rate_u_per_h) == (plain.smb_u, plain.rate_u_per_h)


@pytest.mark.parametrize("tail", [[], [245.0], [240.0], [244.0, 238.0], [260.0]])
def test_packed_and_validated_paths_agree(tail: list[float]) -> None:
    inp = _high_then(tail)
    d = decide_with_margin(inp, 0.2)
    out, withheld = decide_packed_with_margin(pack(inp), 0.2)
    assert (out[Out.SMB], out[Out.RATE]) == (d.smb_u, d.rate_u_per_h)
    assert withheld == (d.reasons[0].code == FALLING_FASTER_CODE or "MARGIN" in d.reasons[0].code)
