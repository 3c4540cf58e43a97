"""Reference twins of kernels/_insulin.pyx and kernels/_carbs.pyx."""

from __future__ import annotations

from collections.abc import Sequence

from kernels.reference.core import (
    N_FUTURE,
    STEP_MIN,
    activity_fraction,
    carb_fraction,
    convolve,
    curve_table,
    deposit_doses,
    iob_fraction,
)

__all__ = ["carbs_on_board_reference", "insulin_curve_reference", "insulin_grid_reference"]


def insulin_curve_reference(
    ages_min: Sequence[float], model: int, duration_min: float, peak_min: float, delay_min: float
) -> tuple[list[float], list[float]]:
    """Per-unit IOB fraction and activity at each age."""
    iob = [iob_fraction(a, model, duration_min, peak_min, delay_min) for a in ages_min]
    act = [activity_fraction(a, model, duration_min, peak_min, delay_min) for a in ages_min]
    return iob, act


def insulin_grid_reference(  # noqa: PLR0917 — mirrors the compiled kernel's positional signature
    now_s: float,
    utc_offset_min: float,
    n_past: int,
    dose_t_s: Sequence[float],
    dose_kind: Sequence[float],
    dose_amount: Sequence[float],
    dose_duration_min: Sequence[float],
    basal_start_min: Sequence[float],
    basal_rate_u_per_h: Sequence[float],
    model: int,
    duration_min: float,
    peak_min: float,
    delay_min: float,
) -> tuple[list[float], list[float]]:
    """Net IOB and activity at now + 5k, k = -n_past … 72."""
    lag, c, act = curve_table(model, duration_min, peak_min, delay_min)
    origin = n_past + lag + 1
    n_bins = origin + N_FUTURE + 1
    bins = [0.0] * n_bins
    deposit_doses(
        bins, origin, now_s, utc_offset_min, float(origin * STEP_MIN),
        dose_t_s, dose_kind, dose_amount, dose_duration_min, basal_start_min, basal_rate_u_per_h,
    )  # fmt: skip
    iob = convolve(bins, c, lag)
    actv = convolve(bins, act, lag)
    lo = origin - n_past
    return iob[lo : lo + n_past + N_FUTURE + 1], actv[lo : lo + n_past + N_FUTURE + 1]


def carbs_on_board_reference(  # noqa: PLR0917 — mirrors the compiled kernel's positional signature
    times_s: Sequence[float],
    carb_t_s: Sequence[float],
    carb_g: Sequence[float],
    carb_absorption_min: Sequence[float],
    model: int,
    delay_min: float,
) -> tuple[list[float], list[float]]:
    """COB and absorbed carbs at each time (entered amounts, model absorption)."""
    cob_out: list[float] = []
    absorbed_out: list[float] = []
    for t in times_s:
        cob = absorbed = 0.0
        for i in range(len(carb_t_s)):
            if carb_t_s[i] > t:
                continue
            f = carb_fraction((t - carb_t_s[i]) / 60.0 - delay_min, carb_absorption_min[i], model)
            cob += carb_g[i] * (1.0 - f)
            absorbed += carb_g[i] * f
        cob_out.append(cob)
        absorbed_out.append(absorbed)
    return cob_out, absorbed_out
