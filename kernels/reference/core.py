"""Reference twins of kernels/_core.pxd (insulin curves, carb models, grid deposit)."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = [
    "HIST_STEPS",
    "MAX_CARBS",
    "MAX_DEVS",
    "MAX_LAG",
    "N_FUTURE",
    "STEP_MIN",
    "activity_fraction",
    "bilinear_activity",
    "bilinear_iob",
    "carb_fraction",
    "clamp",
    "convolve",
    "curve_table",
    "deposit",
    "deposit_doses",
    "exp_activity",
    "exp_iob",
    "iob_fraction",
    "minute_of_day",
    "scheduled_basal",
]

STEP_MIN = 5
N_FUTURE = 72
HIST_STEPS = 96
MAX_LAG = 120
MAX_CARBS = 64
MAX_DEVS = 1024


def clamp(x: float, lo: float, hi: float) -> float:
    """min(max(x, lo), hi)."""
    if x < lo:
        return lo
    if x > hi:
        return hi
    return x


def exp_iob(t: float, td: float, tp: float) -> float:
    """Loop/oref0 exponential model: 1 - S(1-a)((t²/(τ·td·(1-a)) - t/τ - 1)e^(-t/τ) + 1)."""
    if t <= 0.0:
        return 1.0
    if t >= td:
        return 0.0
    tau = tp * (1.0 - tp / td) / (1.0 - 2.0 * tp / td)
    a = 2.0 * tau / td
    s = 1.0 / (1.0 - a + (1.0 + a) * math.exp(-td / tau))
    return 1.0 - s * (1.0 - a) * (
        (t * t / (tau * td * (1.0 - a)) - t / tau - 1.0) * math.exp(-t / tau) + 1.0
    )


def exp_activity(t: float, td: float, tp: float) -> float:
    """Exponential activity (fraction per min): S/τ² · t · (1 - t/td) · e^(-t/τ)."""
    if t <= 0.0 or t >= td:
        return 0.0
    tau = tp * (1.0 - tp / td) / (1.0 - 2.0 * tp / td)
    a = 2.0 * tau / td
    s = 1.0 / (1.0 - a + (1.0 + a) * math.exp(-td / tau))
    return s / (tau * tau) * t * (1.0 - t / td) * math.exp(-t / tau)


def bilinear_iob(t: float, td: float, tp: float) -> float:
    """Triangular activity of height 2/td peaking at tp: IOB = 1 - ∫₀ᵗ activity."""
    h = 2.0 / td
    if t <= 0.0:
        return 1.0
    if t >= td:
        return 0.0
    if t <= tp:
        return 1.0 - h * t * t / (2.0 * tp)
    return h * (td - t) * (td - t) / (2.0 * (td - tp))


def bilinear_activity(t: float, td: float, tp: float) -> float:
    """Triangular activity: h·t/tp rising, h·(td-t)/(td-tp) falling, h = 2/td."""
    h = 2.0 / td
    if t <= 0.0 or t >= td:
        return 0.0
    if t <= tp:
        return h * t / tp
    return h * (td - t) / (td - tp)


def iob_fraction(age: float, model: int, td: float, tp: float, delay: float) -> float:
    """Fraction of a dose still on board `age` minutes after delivery (after `delay`)."""
    if model == 1:
        return bilinear_iob(age - delay, td, tp)
    return exp_iob(age - delay, td, tp)


def activity_fraction(age: float, model: int, td: float, tp: float, delay: float) -> float:
    """Fraction of a dose acting per minute `age` minutes after delivery."""
    if model == 1:
        return bilinear_activity(age - delay, td, tp)
    return exp_activity(age - delay, td, tp)


def carb_fraction(elapsed: float, absorption_min: float, model: int) -> float:
    """Absorbed fraction: linear x, or Loop's parabola 2x² (x<½), -1+4x-2x² (x<1); x = t/T."""
    if elapsed <= 0.0:
        return 0.0
    x = elapsed / absorption_min
    if x >= 1.0:
        return 1.0
    if model == 1:
        if x < 0.5:
            return 2.0 * x * x
        return -1.0 + 4.0 * x - 2.0 * x * x
    return x


def scheduled_basal(minute: float, start_min: Sequence[float], rate: Sequence[float]) -> float:
    """Scheduled rate (U/h) of the last segment whose start ≤ minute (schedule sorted)."""
    r = rate[len(rate) - 1]
    for i in range(len(start_min)):
        if start_min[i] <= minute:
            r = rate[i]
        else:
            break
    return float(r)


def minute_of_day(rel_min: float, now_s: float, utc_offset_min: float) -> float:
    """Local minute of day of a time `rel_min` minutes from now."""
    m = now_s / 60.0 + utc_offset_min + rel_min
    return m - math.floor(m / 1440.0) * 1440.0


def deposit(bins: list[float], origin: int, rel_min: float, units: float) -> None:
    """Split a pulse at rel_min linearly between its two neighbouring 5-min grid points."""
    rel_min = min(rel_min, 0.0)
    p = rel_min / STEP_MIN
    k0 = math.floor(p)
    f = p - k0
    if k0 + origin >= 0:
        bins[k0 + origin] += units * (1.0 - f)
    if k0 + 1 + origin >= 0 and k0 + 1 + origin < len(bins) and f > 0.0:
        bins[k0 + 1 + origin] += units * f


def deposit_doses(  # noqa: PLR0917 — mirrors the compiled kernel's positional signature
    bins: list[float],
    origin: int,
    now_s: float,
    utc_offset_min: float,
    horizon_min: float,
    t_s: Sequence[float],
    kind: Sequence[float],
    amount: Sequence[float],
    duration_min: Sequence[float],
    sched_start: Sequence[float],
    sched_rate: Sequence[float],
) -> int:
    """Net insulin pulses on the grid (see kernels/_core.pxd deposit_doses)."""
    count = 0
    n = len(t_s)
    for i in range(n):
        start = (t_s[i] - now_s) / 60.0
        if kind[i] == 0.0:
            if duration_min[i] <= 0.0:
                if start >= -horizon_min:
                    deposit(bins, origin, start, amount[i])
                    count += 1
                continue
            end = start + duration_min[i]
            rate = amount[i] / duration_min[i]
        else:
            end = start + duration_min[i]
            for j in range(i + 1, n):
                if kind[j] != 0.0:
                    end = min(end, (t_s[j] - now_s) / 60.0)
                    break
            rate = -1.0
        end = min(end, 0.0)
        start = max(start, -horizon_min)
        if end <= start:
            continue
        n_pulses = int((end - start) / STEP_MIN)
        if start + n_pulses * STEP_MIN < end:
            n_pulses += 1
        length = (end - start) / n_pulses
        for j in range(n_pulses):
            mid = start + (j + 0.5) * length
            if kind[i] == 0.0:
                u = rate * length
            else:
                sched = scheduled_basal(
                    minute_of_day(mid, now_s, utc_offset_min), sched_start, sched_rate
                )
                u = (amount[i] - sched) * length / 60.0
            deposit(bins, origin, mid, u)
            count += 1
    return count


def curve_table(
    model: int, td: float, tp: float, delay: float
) -> tuple[int, list[float], list[float]]:
    """IOB and activity fractions at ages 0, 5, … 5·L with L = ⌈(td + delay)/5⌉."""
    lag = int((td + delay) / STEP_MIN)
    if lag * STEP_MIN < td + delay:
        lag += 1
    c = [iob_fraction(float(lg * STEP_MIN), model, td, tp, delay) for lg in range(lag + 1)]
    act = [activity_fraction(float(lg * STEP_MIN), model, td, tp, delay) for lg in range(lag + 1)]
    return lag, c, act


def convolve(bins: Sequence[float], c: Sequence[float], lag: int) -> list[float]:
    """out[k] = Σ_{j ≤ k, k-j ≤ L} bins[j]·c[k-j] (same summation order as the kernel)."""
    n = len(bins)
    out = [0.0] * n
    for j in range(n):
        b = bins[j]
        if b == 0.0:
            continue
        for lg in range(min(lag + 1, n - j)):
            out[j + lg] += b * c[lg]
    return out
