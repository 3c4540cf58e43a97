"""Safety properties of the compiled decision on generated 24-h histories.

The slow test runs 10,000 generated cases (each case checks the invariants and three
monotonicity comparisons); the quick one runs a few hundred on every test run.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kernels._layout import (
    HARD_MAX_BASAL_U_PER_H,
    HARD_MAX_BOLUS_U,
    HARD_MAX_IOB_U,
    Action,
    Out,
    Param,
    Reason,
)
from kernels.decision import PackedInput, decide_packed
from tests.kernels.gen import make_case, with_params

DOUBTFUL = Reason.STALE_CGM | Reason.FUTURE_CGM | Reason.NOISY_CGM | Reason.FLAT_CGM
EPS = 1e-9


def insulin_30min(out: np.ndarray) -> float:
    """Insulin the decision delivers over the next 30 min: micro-bolus + running rate / 2."""
    return float(out[Out.SMB] + 0.5 * out[Out.RATE])


def check_invariants(case: PackedInput, out: np.ndarray) -> None:
    p = case.params
    age = int(p[Param.AGE_GROUP])
    reasons = Reason(int(out[Out.REASONS]))
    assert np.all(np.isfinite(out)), "NaN or infinity in the decision"
    rate, smb, sched = out[Out.RATE], out[Out.SMB], out[Out.SCHEDULED_BASAL]
    assert rate >= 0.0
    assert smb >= 0.0
    assert out[Out.DURATION] >= 0.0
    assert out[Out.COB] >= 0.0
    lines = out[Out.LINE_MAIN : Out.LINE_ZT + 73]
    if out[Out.BG] > 0:
        assert lines.min() >= 39.0
        assert lines.max() <= 400.0
    max_safe = out[Out.MAX_SAFE_BASAL]
    assert max_safe <= min(p[Param.MAX_BASAL], HARD_MAX_BASAL_U_PER_H[age]) + EPS
    if out[Out.ACTION] == Action.TEMP_BASAL:
        assert out[Out.DURATION] == 30.0
        assert rate <= max(max_safe, 0.0) + EPS or rate <= sched + EPS
        assert rate <= HARD_MAX_BASAL_U_PER_H[age] + EPS or rate <= sched
    assert smb <= min(p[Param.MAX_BOLUS], 30.0, HARD_MAX_BOLUS_U[age]) + EPS
    assert smb <= 0.5 * sched + EPS
    increases = smb > 0.0 or (out[Out.ACTION] == Action.TEMP_BASAL and rate > sched)
    if increases:
        max_iob = min(p[Param.MAX_IOB], HARD_MAX_IOB_U[age])
        assert out[Out.IOB] + smb + 0.5 * (rate - sched) <= max_iob + 1e-6
        assert not reasons & DOUBTFUL
        assert p[Param.MODE] != 1.0  # suspend-only mode never adds insulin
    if smb > 0.0:
        assert p[Param.MODE] == 3.0
        assert p[Param.BOLUS_IN_PROGRESS] == 0.0
        assert np.isnan(p[Param.LAST_BOLUS_S]) or p[Param.NOW_S] - p[Param.LAST_BOLUS_S] >= 180
        boluses = case.dose_t_s[case.dose_kind == 0.0]
        assert boluses.size == 0 or p[Param.NOW_S] - boluses.max() >= 180
        assert np.isnan(p[Param.LAST_SMB_S]) or p[Param.NOW_S] - p[Param.LAST_SMB_S] >= 180
    if reasons & DOUBTFUL:
        assert smb == 0.0
        assert out[Out.ACTION] != Action.TEMP_BASAL or rate <= sched + EPS
    if p[Param.UNCERTAIN_DELIVERY]:
        assert out[Out.ACTION] == Action.NONE
        assert smb == 0.0
        assert out[Out.ENACT] == 0.0
    if p[Param.MODE] == 0.0:
        assert out[Out.ENACT] == 0.0


def check_case(seed: int, shift_mg_dl: float, carb_scale: float, force: int) -> None:
    case = make_case(seed)
    if force == 1:
        case = with_params(case, NOISE_LEVEL=3.0)
    elif force == 2:  # last reading 13 min old
        case = with_params(case, NOW_S=float(case.cgm_t_s[-1] + 13 * 60))
    elif force == 3:  # reading 6 min in the future
        case = with_params(case, NOW_S=float(case.cgm_t_s[-1] - 6 * 60))
    base = decide_packed(case)
    check_invariants(case, base)
    if force:
        assert Reason(int(base[Out.REASONS])) & DOUBTFUL
    # basal rounding can move up to half an increment between temp and micro-bolus
    tol = 0.5 * case.params[Param.BASAL_INCREMENT] + 1e-9
    if case.cgm_mg_dl.min() - shift_mg_dl >= 39.0:
        lower = replace(case, cgm_mg_dl=case.cgm_mg_dl - shift_mg_dl)
        out = decide_packed(lower)
        check_invariants(lower, out)
        assert insulin_30min(out) <= insulin_30min(base) + tol
    # a lower latest reading alone never gives more insulin either, unless it ends a flat-signal
    # hold (a stuck sensor that starts moving again is allowed to be trusted again)
    drop = min(shift_mg_dl, 40.0)
    if case.cgm_mg_dl[-1] - drop >= 39.0 and not Reason(int(base[Out.REASONS])) & Reason.FLAT_CGM:
        values = case.cgm_mg_dl.copy()
        values[-1] -= drop
        last_lower = replace(case, cgm_mg_dl=values)
        out = decide_packed(last_lower)
        check_invariants(last_lower, out)
        assert insulin_30min(out) <= insulin_30min(base) + tol
    if case.carb_g.size:
        more = replace(case, carb_g=np.minimum(case.carb_g * carb_scale, 250.0))
        out = decide_packed(more)
        check_invariants(more, out)
        assert insulin_30min(out) >= insulin_30min(base) - tol
        one = case.carb_g.copy()  # more carbs in one meal only
        one[seed % one.size] = min(one[seed % one.size] * carb_scale + 5.0, 250.0)
        one_more = replace(case, carb_g=one)
        out = decide_packed(one_more)
        check_invariants(one_more, out)
        assert insulin_30min(out) >= insulin_30min(base) - tol


CASES = {
    "seed": st.integers(0, 2**63 - 1),
    "shift_mg_dl": st.floats(0.5, 120.0),
    "carb_scale": st.floats(1.0, 3.0),
    "force": st.sampled_from([0, 0, 0, 0, 1, 2, 3]),
}


@settings(max_examples=300, deadline=None)
@given(**CASES)
def test_decision_properties(seed, shift_mg_dl, carb_scale, force) -> None:
    check_case(seed, shift_mg_dl, carb_scale, force)


@pytest.mark.slow
@settings(max_examples=10_000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(**CASES)
def test_decision_properties_10k(seed, shift_mg_dl, carb_scale, force) -> None:
    check_case(seed, shift_mg_dl, carb_scale, force)
