"""Hovorka (Cambridge) glucose–insulin model: validated wrapper and NumPy reference.

The compiled kernel `kernels._hovorka.step_block` advances a whole cohort by one control block.
Per person it applies the block's impulses (insulin into the first subcutaneous compartment S1,
carbohydrate into the gut compartments D1 and the fast-carb D1f, scaled by bioavailability AG)
and then integrates, with fixed-step RK4:

    G    = Q1 / VG                                 plasma glucose [mmol/L]
    F01c = F01 · min(1, G/4.5)                     insulin-independent uptake [mmol/min]
    FR   = renal · (G − 9) · VG  if G > 9          renal clearance [mmol/min]
    dQ1  = −F01c − Ex·min(1, G/4.5) − x1·Q1 + k12·Q2 − FR + D2/tmaxG + D2f/tmaxGf
           + EGP0·m_egp·max(0, 1 − x3)
    dQ2  = x1·Q1 − (k12 + x2)·Q2
    dS1  = −S1/tmaxI,  dS2 = (S1 − S2)/tmaxI,  dI = S2/(tmaxI·VI) − ke·I
    dxk  = −kak·xk + m_si·kbk·I                    (k = 1, 2, 3)
    dD1  = −D1/tmaxG,  dD2 = (D1 − D2)/tmaxG       (same for the fast pair with tmaxGf)
    dC   = (G − C)/tauC                            interstitial glucose seen by the CGM
    dCLR = ke·I·VI                                 insulin cleared so far [mU]

Units: glucose masses in mmol, insulin masses in mU, I in mU/L, time in minutes.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from kernels import _hovorka

__all__ = [
    "INPUT_NAMES",
    "N_INPUTS",
    "N_PARAMS",
    "N_STATES",
    "PARAM_NAMES",
    "STATE_NAMES",
    "derivatives_reference",
    "step_block",
    "step_block_reference",
]

STATE_NAMES: Final = (
    "q1_mmol", "q2_mmol", "s1_mu", "s2_mu", "plasma_insulin_mu_per_l", "x1_per_min",
    "x2_per_min", "x3", "d1_mmol", "d2_mmol", "d1_fast_mmol", "d2_fast_mmol",
    "interstitial_glucose_mmol_l", "insulin_cleared_mu",
)  # fmt: skip
PARAM_NAMES: Final = (
    "vg_l", "f01_mmol_per_min", "k12_per_min", "egp0_mmol_per_min", "ka1_per_min",
    "ka2_per_min", "ka3_per_min", "kb1", "kb2", "kb3", "ke_per_min", "vi_l", "tmax_i_min",
    "ag", "tmax_g_min", "tmax_g_fast_min", "tau_cgm_min", "renal_per_min",
    "renal_threshold_mmol_l",
)  # fmt: skip
INPUT_NAMES: Final = (
    "insulin_mu", "carbs_mmol", "fast_carbs_mmol", "si_multiplier", "egp_multiplier",
    "exercise_uptake_mmol_per_min",
)  # fmt: skip
N_STATES: Final = len(STATE_NAMES)
N_PARAMS: Final = len(PARAM_NAMES)
N_INPUTS: Final = len(INPUT_NAMES)

FloatArray = npt.NDArray[np.float64]


def _check(state: FloatArray, params: FloatArray, inputs: FloatArray, n_steps: int) -> None:
    for name, arr, width in (
        ("state", state, N_STATES),
        ("params", params, N_PARAMS),
        ("inputs", inputs, N_INPUTS),
    ):
        if not isinstance(arr, np.ndarray) or arr.dtype != np.float64 or arr.ndim != 2:
            raise TypeError(f"{name} must be a 2-D float64 array")
        if arr.shape[1] != width:
            raise ValueError(f"{name} must have {width} columns, got {arr.shape[1]}")
        if arr.shape[0] != state.shape[0]:
            raise ValueError(f"{name} has {arr.shape[0]} rows, state has {state.shape[0]}")
    if not state.flags.c_contiguous or not state.flags.writeable:
        raise ValueError("state must be C-contiguous and writeable (it is updated in place)")
    if n_steps < 0:
        raise ValueError(f"n_steps must be ≥ 0, got {n_steps}")


def step_block(
    state: FloatArray,
    params: FloatArray,
    inputs: FloatArray,
    *,
    n_steps: int = 5,
    dt_min: float = 1.0,
    validate: bool = True,
) -> None:
    """Advance every row of `state` in place by `n_steps` RK4 steps of `dt_min` (≤ 1) minutes.

    `validate=False` skips the checks for the hot loop of a runner that built its arrays once.
    """
    if validate:
        _check(state, params, inputs, n_steps)
        if not 0.0 < dt_min <= 1.0:
            raise ValueError(f"dt_min must be in (0, 1], got {dt_min}")
        if not (np.all(np.isfinite(inputs)) and np.all(inputs[:, :3] >= 0.0)):
            raise ValueError("inputs must be finite and impulses non-negative")
        params = np.ascontiguousarray(params)
        inputs = np.ascontiguousarray(inputs)
    _hovorka.step_block(state, params, inputs, n_steps, dt_min)


def derivatives_reference(
    y: FloatArray, p: FloatArray, si_mult: float, egp_mult: float, ex_uptake: float
) -> FloatArray:
    """The right-hand side above for one person, written plainly with NumPy."""
    (q1, q2, s1, s2, ins, x1, x2, x3, d1, d2, d1f, d2f, c, _clr) = y
    (vg, f01, k12, egp0, ka1, ka2, ka3, kb1, kb2, kb3, ke, vi, tmaxi, _ag, tmaxg, tmaxgf, tauc,
     renal, renal_th) = p  # fmt: skip
    g = max(q1, 0.0) / vg
    scale = min(1.0, g / 4.5)
    fr = renal * (g - renal_th) * vg if g > renal_th else 0.0
    return np.array(
        [
            -f01 * scale - ex_uptake * scale - x1 * q1 + k12 * q2 - fr + d2 / tmaxg + d2f / tmaxgf
            + egp0 * egp_mult * max(0.0, 1.0 - x3),
            x1 * q1 - (k12 + x2) * q2,
            -s1 / tmaxi,
            (s1 - s2) / tmaxi,
            s2 / tmaxi / vi - ke * ins,
            -ka1 * x1 + si_mult * kb1 * ins,
            -ka2 * x2 + si_mult * kb2 * ins,
            -ka3 * x3 + si_mult * kb3 * ins,
            -d1 / tmaxg,
            (d1 - d2) / tmaxg,
            -d1f / tmaxgf,
            (d1f - d2f) / tmaxgf,
            (g - c) / tauc,
            ke * ins * vi,
        ]
    )  # fmt: skip


def step_block_reference(
    state: FloatArray, params: FloatArray, inputs: FloatArray, *, n_steps: int = 5,
    dt_min: float = 1.0,
) -> FloatArray:  # fmt: skip
    """Pure NumPy version of `step_block`; returns the new state instead of updating in place."""
    out = np.array(state, dtype=np.float64, copy=True)
    for i in range(out.shape[0]):
        y = out[i].copy()
        p = params[i]
        ins_mu, carbs, fast, si_mult, egp_mult, ex = inputs[i]
        y[2] += ins_mu
        y[8] += p[13] * carbs
        y[10] += p[13] * fast
        h = dt_min
        for _ in range(n_steps):
            k1 = derivatives_reference(y, p, si_mult, egp_mult, ex)
            k2 = derivatives_reference(y + 0.5 * h * k1, p, si_mult, egp_mult, ex)
            k3 = derivatives_reference(y + 0.5 * h * k2, p, si_mult, egp_mult, ex)
            k4 = derivatives_reference(y + h * k3, p, si_mult, egp_mult, ex)
            y = y + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        out[i] = y
    return out
