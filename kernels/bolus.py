"""Bolus calculator: carbs/CR + (BG - target)/ISF - IOB, reduced for a falling trend, rounded
down to the pump increment; standard, extended or dual-wave; guardrails and warnings."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntFlag

import numpy as np

from kernels import _bolus
from kernels._layout import AGE_GROUPS, HARD_MAX_BOLUS_U

__all__ = ["BolusAdvice", "BolusWarning", "bolus_advice"]

MAX_CARBS_G = 250.0
MAX_BOLUS_U = 30.0


class BolusWarning(IntFlag):
    LOW_GLUCOSE = 1 << 0  # below 70 mg/dL: no correction, treat the low first
    FALLING_TREND = 1 << 1  # reduced by 30 min of the falling trend
    CAPPED = 1 << 2  # limited by max bolus (setting, 30 U and the age-group hard limit)
    SUGGEST_CARBS = 1 << 3  # carbs suggested instead of insulin
    IOB_COVERS = 1 << 4  # insulin on board already covers the need
    SETTING_CLAMPED = 1 << 5  # max bolus setting above 30 U or the age-group limit


@dataclass(frozen=True, slots=True)
class BolusAdvice:
    total_u: float
    immediate_u: float
    extended_u: float
    extended_duration_min: float
    carb_u: float
    correction_u: float
    iob_u: float
    trend_u: float
    suggested_carbs_g: float
    warnings: BolusWarning


def bolus_advice(
    *,
    carbs_g: float,
    bg_mg_dl: float,
    target_mg_dl: float,
    isf_mg_dl_per_u: float,
    carb_ratio_g_per_u: float,
    iob_u: float,
    trend_mg_dl_per_min: float = 0.0,
    increment_u: float = 0.05,
    max_bolus_u: float = 10.0,
    age_group: str = "adult",
    immediate_pct: float = 100.0,
    extended_duration_min: float = 0.0,
) -> BolusAdvice:
    """Advice for one bolus; invalid settings raise ValueError and change nothing.

    Standard: immediate_pct 100. Extended: 0 %. Dual wave: in between, with the remainder over
    extended_duration_min (30 min – 8 h).
    """
    values = (carbs_g, bg_mg_dl, target_mg_dl, isf_mg_dl_per_u, carb_ratio_g_per_u, iob_u)
    if not all(np.isfinite(v) for v in (*values, trend_mg_dl_per_min, max_bolus_u)):
        raise ValueError("bolus inputs must be finite")
    if not 0.0 <= carbs_g <= MAX_CARBS_G:
        raise ValueError("carbs must be 0–250 g")
    if not 10.0 <= isf_mg_dl_per_u <= 500.0:
        raise ValueError("ISF must be 10–500 mg/dL/U")
    if not 2.0 <= carb_ratio_g_per_u <= 150.0:
        raise ValueError("carb ratio must be 2–150 g/U")
    if not 39.0 <= bg_mg_dl <= 401.0 or not 70.0 <= target_mg_dl <= 180.0:
        raise ValueError("glucose must be 39–401 and target 70–180 mg/dL")
    if not 0.0 < increment_u <= 1.0 or max_bolus_u < 0.0:
        raise ValueError("increment must be in (0, 1] U and max bolus ≥ 0")
    if age_group not in AGE_GROUPS:
        raise ValueError(f"age_group must be one of {AGE_GROUPS}")
    if not 0.0 <= immediate_pct <= 100.0:
        raise ValueError("immediate part must be 0–100 %")
    if immediate_pct < 100.0 and not 30.0 <= extended_duration_min <= 480.0:
        raise ValueError("extended duration must be 30 min – 8 h")
    limit = min(max_bolus_u, MAX_BOLUS_U, HARD_MAX_BOLUS_U[AGE_GROUPS.index(age_group)])
    clamped = limit < max_bolus_u
    p = np.array(
        [*values, trend_mg_dl_per_min, increment_u, limit, immediate_pct], dtype=np.float64
    )
    out = np.zeros(10)
    _bolus.bolus_calc(p, out)
    warnings = BolusWarning(int(out[8]))
    if clamped:
        warnings |= BolusWarning.SETTING_CLAMPED
    return BolusAdvice(
        total_u=float(out[0]),
        immediate_u=float(out[1]),
        extended_u=float(out[2]),
        extended_duration_min=float(extended_duration_min) if out[2] > 0 else 0.0,
        carb_u=float(out[3]),
        correction_u=float(out[4]),
        iob_u=float(out[5]),
        trend_u=float(out[6]),
        suggested_carbs_g=float(out[7]),
        warnings=warnings,
    )
