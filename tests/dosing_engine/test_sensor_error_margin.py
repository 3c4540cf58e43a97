"""The increase margin's allowance for CGM calibration error (kernels.increase_margin): the
forecast minimum is lowered by a share of itself before it must clear the margin; an increase
the plain margin allows is withheld when a reading that share too high would breach it; never
more insulin; the service's decision path applies the default."""

from __future__ import annotations

import math

import pytest

from kernels.decision import Decision, Mode, decide, pack
from kernels.increase_margin import (
    DEFAULT_SENSOR_ERROR_FRACTION,
    INCREASE_MARGIN_CODE,
    check_sensor_error_fraction,
    decide_packed_with_margin,
    decide_with_margin,
    within_increase_margin,
)
from sim.controllers.dosing_engine import DosingEngineController, LoopTuning
from sim.person import make_cohort
from tests.dosing_engine.test_increase_margin import _GRID, ISF, SCHEDULED, _state

IOB_FRACTION = 0.2


def _withheld(d: Decision) -> bool:
    return any(r.code == INCREASE_MARGIN_CODE for r in d.reasons)


def _critical_error(d: Decision) -> float:
    """The sensor-error share at which this decision's forecast minimum sits on the margin."""
    margin = IOB_FRACTION * max(0.0, d.iob_u) * ISF / d.sensitivity_ratio
    return 1.0 - (d.threshold_mg_dl + margin) / d.min_guard_bg_mg_dl


def test_the_forecast_minimum_is_lowered_in_proportion_to_glucose() -> None:
    common = {
        "threshold_mg_dl": 80.0,
        "iob_u": 2.0,
        "isf_mg_dl_per_u": 50.0,
        "sensitivity_ratio": 1.0,
        "iob_fraction": 0.2,
    }  # margin line: 80 + 20 = 100 mg/dL
    assert within_increase_margin(min_guard_bg_mg_dl=110.0, sensor_error_fraction=0.0, **common)
    # 110 × 0.85 = 93.5 < 100: a reading 15 % high would put the true minimum below the line
    assert not within_increase_margin(
        min_guard_bg_mg_dl=110.0, sensor_error_fraction=0.15, **common
    )
    assert within_increase_margin(min_guard_bg_mg_dl=118.0, sensor_error_fraction=0.15, **common)


def test_an_increase_allowed_by_the_plain_margin_is_withheld_for_sensor_error() -> None:
    inp = _state(4.0, 140.0, 3.0, Mode.CLOSED_LOOP_SMB)  # rising, 3.3 U on board
    plain = decide(inp)
    assert plain.smb_u > 0
    critical = _critical_error(plain)
    assert 0.02 < critical < 0.38  # the state sits inside the setting's range

    allowed = decide_with_margin(inp, IOB_FRACTION, sensor_error_fraction=critical - 0.02)
    assert not _withheld(allowed)
    assert (allowed.rate_u_per_h, allowed.smb_u) == (plain.rate_u_per_h, plain.smb_u)

    withheld = decide_with_margin(inp, IOB_FRACTION, sensor_error_fraction=critical + 0.02)
    assert withheld.reasons[0].code == INCREASE_MARGIN_CODE
    assert withheld.smb_u == 0.0
    assert withheld.rate_u_per_h <= SCHEDULED


def test_the_service_path_applies_the_default_allowance() -> None:
    """decide_with_margin as the service calls it (no allowance argument) withholds an increase
    whose forecast minimum clears the plain margin by less than the default allowance."""
    inp = _state(4.0, 140.0, 3.0, Mode.CLOSED_LOOP_SMB)
    critical = _critical_error(decide(inp))
    assert 0.0 < critical < DEFAULT_SENSOR_ERROR_FRACTION
    assert not _withheld(decide_with_margin(inp, IOB_FRACTION, sensor_error_fraction=0.0))
    service = decide_with_margin(inp, IOB_FRACTION)
    assert _withheld(service)
    assert service.smb_u == 0.0


@pytest.mark.parametrize("error", [0.0, 0.1, 0.15, 0.4])
def test_the_allowance_never_gives_more_insulin(error: float) -> None:
    for bolus_u, start, slope, mode in _GRID:
        inp = _state(bolus_u, start, slope, mode)
        base = decide_with_margin(inp, IOB_FRACTION, sensor_error_fraction=0.0)
        guarded = decide_with_margin(inp, IOB_FRACTION, sensor_error_fraction=error)
        assert guarded.smb_u <= base.smb_u
        assert guarded.rate_u_per_h * 0.5 + guarded.smb_u <= (
            base.rate_u_per_h * 0.5 + base.smb_u + 1e-9
        )
        out, withheld = decide_packed_with_margin(
            pack(inp), IOB_FRACTION, sensor_error_fraction=error
        )
        assert withheld == _withheld(guarded)
        assert (float(out[1]), float(out[3])) == (guarded.rate_u_per_h, guarded.smb_u)


@pytest.mark.parametrize("bad", [-0.01, 0.41, math.nan, math.inf])
def test_the_allowance_must_be_within_0_to_0_4(bad: float) -> None:
    with pytest.raises(ValueError, match=r"0–0\.4"):
        check_sensor_error_fraction(bad)
    inp = _state(0.0, 120.0, 0.0, Mode.CLOSED_LOOP_SMB)
    with pytest.raises(ValueError, match=r"0–0\.4"):
        decide_with_margin(inp, IOB_FRACTION, sensor_error_fraction=bad)
    with pytest.raises(ValueError, match=r"0–0\.4"):
        decide_packed_with_margin(pack(inp), IOB_FRACTION, sensor_error_fraction=bad)
    therapy = make_cohort(2004)[0].therapy
    with pytest.raises(ValueError, match=r"0–0\.4"):
        DosingEngineController(therapy, LoopTuning(increase_margin_sensor_error_fraction=bad))
