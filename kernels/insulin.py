"""Insulin action: model presets, per-unit curves and net insulin on board from a dose history.

Exponential curves follow the oref0/Loop model (duration, peak, 10-min delay); the bilinear
model is a triangle of activity. Temp basals and suspends count relative to the scheduled basal
(net IOB: a zero temp gives negative IOB); extended boluses are split into ≤ 5-min pulses.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final

import numpy as np
import numpy.typing as npt

from kernels import _insulin

__all__ = [
    "INSULIN_PRESETS",
    "GridSeries",
    "InsulinModel",
    "InsulinModelKind",
    "insulin_curve",
    "net_insulin_on_board",
]

F64 = npt.NDArray[np.float64]


class InsulinModelKind(IntEnum):
    EXPONENTIAL = 0
    BILINEAR = 1


@dataclass(frozen=True, slots=True)
class InsulinModel:
    """Duration of action, peak and delay in minutes; validated on creation."""

    kind: InsulinModelKind = InsulinModelKind.EXPONENTIAL
    duration_min: float = 360.0
    peak_min: float = 75.0
    delay_min: float = 10.0

    def __post_init__(self) -> None:
        if not 120.0 <= self.duration_min <= 480.0:
            raise ValueError("insulin duration must be 120–480 min")
        if not 0.0 <= self.delay_min <= 60.0:
            raise ValueError("insulin delay must be 0–60 min")
        if not 10.0 <= self.peak_min < self.duration_min / 2.0:
            raise ValueError("insulin peak must be ≥ 10 min and below half the duration")


INSULIN_PRESETS: Final[dict[str, InsulinModel]] = {
    "rapid-acting": InsulinModel(InsulinModelKind.EXPONENTIAL, 360.0, 75.0, 10.0),
    "child": InsulinModel(InsulinModelKind.EXPONENTIAL, 360.0, 65.0, 10.0),
    "ultra-rapid": InsulinModel(InsulinModelKind.EXPONENTIAL, 360.0, 55.0, 10.0),
    # oref0's bilinear curve peaks at 75 min of a 180-min action; scaled to 360 min here
    "bilinear": InsulinModel(InsulinModelKind.BILINEAR, 360.0, 150.0, 10.0),
}


def _f64(values: npt.ArrayLike, name: str) -> F64:
    arr = np.ascontiguousarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite")
    return arr


def insulin_curve(ages_min: npt.ArrayLike, model: InsulinModel) -> tuple[F64, F64]:
    """Per-unit IOB fraction and activity (fraction per minute) at each age in minutes."""
    ages = _f64(ages_min, "ages_min")
    iob = np.empty_like(ages)
    act = np.empty_like(ages)
    _insulin.insulin_curve(
        ages, int(model.kind), model.duration_min, model.peak_min, model.delay_min, iob, act
    )
    return iob, act


@dataclass(frozen=True, slots=True)
class GridSeries:
    """Values at now + 5·k minutes for k = -n_past … 72."""

    times_s: F64
    iob_u: F64
    activity_u_per_min: F64


def net_insulin_on_board(  # noqa: PLR0917 — one array per dose field
    now_s: float,
    dose_t_s: npt.ArrayLike,
    dose_kind: npt.ArrayLike,
    dose_amount: npt.ArrayLike,
    dose_duration_min: npt.ArrayLike,
    basal_start_min: npt.ArrayLike,
    basal_rate_u_per_h: npt.ArrayLike,
    model: InsulinModel,
    *,
    utc_offset_min: float = 0.0,
    n_past: int = 0,
) -> GridSeries:
    """Net IOB and activity on the 5-min grid (future assumes the schedule, no new doses).

    Doses: kind 0 bolus (amount U, duration > 0 = extended), 1 temp basal (amount U/h),
    2 suspend; sorted by time. The basal schedule is (minute of day, U/h) sorted from 0.
    """
    t = _f64(dose_t_s, "dose_t_s")
    kind = _f64(dose_kind, "dose_kind")
    amount = _f64(dose_amount, "dose_amount")
    dur = _f64(dose_duration_min, "dose_duration_min")
    bs = _f64(basal_start_min, "basal_start_min")
    br = _f64(basal_rate_u_per_h, "basal_rate_u_per_h")
    if not (t.size == kind.size == amount.size == dur.size):
        raise ValueError("dose arrays must have the same length")
    if bs.size == 0 or bs.size != br.size or bs[0] != 0.0 or np.any(np.diff(bs) <= 0):
        raise ValueError("basal schedule must start at minute 0 and increase")
    if np.any(np.diff(t) < 0) or np.any(amount < 0) or np.any(dur < 0):
        raise ValueError("doses must be sorted and non-negative")
    if not 0 <= n_past <= 2000:
        raise ValueError("n_past must be 0–2000")
    n = n_past + 73
    iob = np.empty(n)
    act = np.empty(n)
    _insulin.insulin_grid(
        float(now_s), float(utc_offset_min), n_past, t, kind, amount, dur, bs, br,
        int(model.kind), model.duration_min, model.peak_min, model.delay_min, iob, act,
    )  # fmt: skip
    times = float(now_s) + 300.0 * np.arange(-n_past, 73, dtype=np.float64)
    return GridSeries(times, iob, act)
