"""Reference twin of kernels/_bolus.pyx."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

__all__ = ["bolus_calc_reference"]


def _floor_to(x: float, inc: float) -> float:
    if inc <= 0.0:
        return x
    return math.floor(x / inc + 1e-9) * inc


def bolus_calc_reference(p: npt.NDArray[np.float64], out: npt.NDArray[np.float64]) -> None:
    """Same contract as kernels._bolus.bolus_calc."""
    carbs, bg, target, isf, cr, iob, trend, inc, max_bolus, pct = p.tolist()
    warn = 0
    carb_u = carbs / cr
    corr = (bg - target) / isf
    if bg < 70.0:
        warn |= 1
        corr = min(corr, 0.0)
    trend_u = 0.0
    if trend < 0.0:
        trend_u = trend * 30.0 / isf
        warn |= 2
    iob_u = max(iob, 0.0)
    raw = carb_u + corr + trend_u - iob_u
    total = max(raw, 0.0)
    if raw <= 0.0 and carb_u + corr + trend_u > 0.0:
        warn |= 16
    sugg = float(math.ceil(-raw * cr)) if raw < 0.0 else 0.0
    if bg < 70.0 and sugg < 15.0:
        sugg = 15.0
    if sugg > 0.0:
        warn |= 8
    if total > max_bolus:
        total = max_bolus
        warn |= 4
    total = _floor_to(total, inc)
    imm = _floor_to(total * pct / 100.0, inc)
    ext = _floor_to(total - imm, inc)
    out[:] = [imm + ext, imm, ext, carb_u, corr, iob_u, trend_u, sugg, float(warn), raw]
