"""Compiled kernels and their plain-Python twins agree within 1e-9 on generated inputs."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import _bolus, _carbs, _decide, _insulin, _metrics
from kernels._layout import N_OUT
from kernels.decision import decide_packed
from kernels.reference.bolus import bolus_calc_reference
from kernels.reference.decide import decide_packed_reference
from kernels.reference.insulin import (
    carbs_on_board_reference,
    insulin_curve_reference,
    insulin_grid_reference,
)
from kernels.reference.metrics import glucose_metrics_reference
from tests.kernels.gen import make_case

TOL = 1e-9


def _close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL)


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), hours=st.sampled_from([2.0, 8.0, 24.0]))
def test_decision_matches_reference(seed: int, hours: float) -> None:
    case = make_case(seed, hours=hours)
    fast = decide_packed(case)
    slow = np.zeros(N_OUT)
    decide_packed_reference(*case.arrays(), slow)
    _close(fast, slow)


@settings(max_examples=100, deadline=None)
@given(
    ages=st.lists(st.floats(-30, 700), min_size=1, max_size=50),
    model=st.integers(0, 1),
    td=st.sampled_from([180.0, 300.0, 360.0, 480.0]),
    peak_frac=st.floats(0.1, 0.45),
    delay=st.floats(0, 30),
)
def test_insulin_curve_matches_reference(ages, model, td, peak_frac, delay) -> None:
    a = np.array(ages)
    iob = np.empty_like(a)
    act = np.empty_like(a)
    _insulin.insulin_curve(a, model, td, td * peak_frac, delay, iob, act)
    ref_iob, ref_act = insulin_curve_reference(ages, model, td, td * peak_frac, delay)
    _close(iob, np.array(ref_iob))
    _close(act, np.array(ref_act))


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n_past=st.integers(0, 300))
def test_insulin_grid_matches_reference(seed: int, n_past: int) -> None:
    c = make_case(seed)
    p = c.params
    now, utc, model, td, tp, delay = p[0], p[16], int(p[14]), p[11], p[12], p[13]
    iob = np.empty(n_past + 73)
    act = np.empty(n_past + 73)
    args = (c.dose_t_s, c.dose_kind, c.dose_amount, c.dose_duration_min)
    _insulin.insulin_grid(
        now, utc, n_past, *args, c.basal_start_min, c.basal_rate_u_per_h, model, td, tp, delay,
        iob, act,
    )  # fmt: skip
    ref = insulin_grid_reference(
        now, utc, n_past, c.dose_t_s.tolist(), c.dose_kind.tolist(), c.dose_amount.tolist(),
        c.dose_duration_min.tolist(), c.basal_start_min.tolist(), c.basal_rate_u_per_h.tolist(),
        model, td, tp, delay,
    )  # fmt: skip
    _close(iob, np.array(ref[0]))
    _close(act, np.array(ref[1]))


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), model=st.integers(0, 1), delay=st.sampled_from([0.0, 10.0]))
def test_carbs_on_board_matches_reference(seed: int, model: int, delay: float) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 8))
    ct = np.sort(rng.uniform(0, 36_000, n))
    cg = rng.uniform(0, 250, n)
    ca = rng.uniform(30, 480, n)
    times = rng.uniform(-3600, 60_000, 40)
    cob = np.empty(40)
    absorbed = np.empty(40)
    _carbs.carbs_on_board(times, ct, cg, ca, model, delay, cob, absorbed)
    ref = carbs_on_board_reference(
        times.tolist(), ct.tolist(), cg.tolist(), ca.tolist(), model, delay
    )
    _close(cob, np.array(ref[0]))
    _close(absorbed, np.array(ref[1]))


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.floats(39, 401), min_size=0, max_size=600), expected=st.floats(0, 700))
def test_metrics_match_reference(values: list[float], expected: float) -> None:
    v = np.array(values, dtype=np.float64)
    out = np.empty(13)
    ref = np.empty(13)
    _metrics.glucose_metrics(v, expected, out)
    glucose_metrics_reference(v, expected, ref)
    _close(out, ref)


@settings(max_examples=300, deadline=None)
@given(
    carbs=st.floats(0, 250), bg=st.floats(39, 401), target=st.floats(70, 180),
    isf=st.floats(10, 500), cr=st.floats(2, 150), iob=st.floats(-5, 30), trend=st.floats(-5, 5),
    inc=st.sampled_from([0.025, 0.05, 0.1]), max_bolus=st.floats(0, 30), pct=st.floats(0, 100),
)  # fmt: skip
def test_bolus_matches_reference(carbs, bg, target, isf, cr, iob, trend, inc, max_bolus, pct):
    p = np.array([carbs, bg, target, isf, cr, iob, trend, inc, max_bolus, pct])
    out = np.empty(10)
    ref = np.empty(10)
    _bolus.bolus_calc(p, out)
    bolus_calc_reference(p, ref)
    _close(out, ref)


def test_compiled_layout_matches_python_layout() -> None:
    from kernels._layout import N_FORECAST, N_PARAMS, Out, Param, Reason

    assert _decide.layout() == {
        "N_PARAMS": N_PARAMS,
        "N_OUT": N_OUT,
        "N_FORECAST": N_FORECAST,
        "LINES": Out.LINE_MAIN,
        "MIN_PRED": Out.MIN_PRED_BG,
        "UAM": Param.ENABLE_UAM,
        "RESUME": Reason.RESUME,
        "LINE_ZT": Out.LINE_ZT,
    }
