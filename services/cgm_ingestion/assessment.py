"""What a reading means in the context of its neighbours: trend, noise, faults, quality.

Pure functions of a time-sorted series of one sensor's readings. Times are seconds since the
epoch; glucose in mg/dL. The caller recomputes the assessment of the readings after an
out-of-order insert, so every function looks only backwards from the reading it assesses.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "COMPRESSION_MIN_DROP_MG_DL",
    "FLAT_MIN_DURATION_S",
    "GAP_THRESHOLD_S",
    "JUMP_RATE_MG_DL_PER_MIN",
    "TREND_WINDOW_S",
    "WARM_UP_S",
    "Assessment",
    "CompressionEpisode",
    "Fault",
    "Point",
    "Trend",
    "arrow",
    "assess",
    "compression_episode",
    "faults_at",
    "gap_before_s",
    "is_flat",
    "is_jump",
    "noise_level",
    "quality_score",
    "rate_of_change",
]

TREND_WINDOW_S = 15 * 60
NOISE_WINDOW_S = 30 * 60
# Readings further apart than this are not "consecutive" for noise and jump checks.
CONSECUTIVE_MAX_S = 7.5 * 60
GAP_THRESHOLD_S = 15 * 60
JUMP_RATE_MG_DL_PER_MIN = 4.0
# Faster than any physiological change a CGM can follow: the arrow says "out of range".
MAX_TREND_RATE_MG_DL_PER_MIN = 10.0
FLAT_MIN_DURATION_S = 45 * 60
WARM_UP_S = 2 * 3600
COMPRESSION_MIN_DROP_MG_DL = 25.0
COMPRESSION_MIN_RATE_MG_DL_PER_MIN = 2.0
COMPRESSION_RECOVERY_MG_DL = 15.0
COMPRESSION_LOOKBACK_S = 90 * 60
NOISY_LEVEL = 3


class Trend(enum.StrEnum):
    """Dexcom-style arrows; thresholds ±1, ±2, ±3 mg/dL/min."""

    DOUBLE_UP = "double_up"
    SINGLE_UP = "single_up"
    FORTY_FIVE_UP = "forty_five_up"
    FLAT = "flat"
    FORTY_FIVE_DOWN = "forty_five_down"
    SINGLE_DOWN = "single_down"
    DOUBLE_DOWN = "double_down"
    NOT_COMPUTABLE = "not_computable"
    RATE_OUT_OF_RANGE = "rate_out_of_range"


class Fault(enum.StrEnum):
    """Sensor problems a reading may carry."""

    JUMP = "jump"
    FLAT_SIGNAL = "flat_signal"
    COMPRESSION_LOW = "compression_low"
    WARM_UP = "warm_up"
    NOISY = "noisy"


@dataclass(frozen=True)
class Point:
    time_s: float
    glucose_mg_dl: float


@dataclass(frozen=True)
class CompressionEpisode:
    """A sharp drop at night that recovered to its baseline: pressure on the sensor."""

    start_s: float
    trough_s: float
    end_s: float
    baseline_mg_dl: float
    trough_mg_dl: float


@dataclass(frozen=True)
class Assessment:
    rate_mg_dl_per_min: float | None
    trend: Trend
    noise_level: int
    faults: frozenset[Fault]
    quality: int


def _window(points: Sequence[Point], index: int, span_s: float) -> list[Point]:
    """Points in (t_index - span_s, t_index], oldest first."""
    limit = points[index].time_s - span_s
    start = index
    while start >= 0 and points[start].time_s > limit:
        start -= 1
    return list(points[start + 1 : index + 1])


def rate_of_change(points: Sequence[Point], index: int) -> float | None:
    """Least-squares slope (mg/dL/min) over the last 15 min; None with < 3 points or < 9 min."""
    window = _window(points, index, TREND_WINDOW_S)
    if len(window) < 3 or window[-1].time_s - window[0].time_s < 9 * 60:
        return None
    mean_t = sum(p.time_s for p in window) / len(window)
    mean_g = sum(p.glucose_mg_dl for p in window) / len(window)
    sxx = sum((p.time_s - mean_t) ** 2 for p in window)
    sxy = sum((p.time_s - mean_t) * (p.glucose_mg_dl - mean_g) for p in window)
    return sxy / sxx * 60.0


def arrow(rate_mg_dl_per_min: float | None) -> Trend:
    if rate_mg_dl_per_min is None or not math.isfinite(rate_mg_dl_per_min):
        return Trend.NOT_COMPUTABLE
    rate = rate_mg_dl_per_min
    if abs(rate) > MAX_TREND_RATE_MG_DL_PER_MIN:
        return Trend.RATE_OUT_OF_RANGE
    if rate >= 3:
        return Trend.DOUBLE_UP
    if rate >= 2:
        return Trend.SINGLE_UP
    if rate >= 1:
        return Trend.FORTY_FIVE_UP
    if rate > -1:
        return Trend.FLAT
    if rate > -2:
        return Trend.FORTY_FIVE_DOWN
    if rate > -3:
        return Trend.SINGLE_DOWN
    return Trend.DOUBLE_DOWN


# Upper bounds of the estimated sensor noise (mg/dL, 1 SD) for levels 0..3; above is 4.
_NOISE_BOUNDS_MG_DL = (2.5, 5.0, 8.0, 12.0)


def noise_level(points: Sequence[Point], index: int) -> int:
    """0 (clean) … 4 (very noisy) from second differences over the last 30 min.

    White noise of SD σ gives second differences of SD σ·√6 while a physiological curve at
    5-min sampling gives only a few mg/dL, so σ ≈ rms(second differences) / √6.
    """
    window = _window(points, index, NOISE_WINDOW_S)
    if len(window) < 4:
        return 0  # fewer than two second differences
    # Plain lists of times and values: the same arithmetic, without attribute lookups.
    times = [p.time_s for p in window]
    values = [p.glucose_mg_dl for p in window]
    second: list[float] = []
    for i in range(2, len(window)):
        if (
            times[i - 1] - times[i - 2] > CONSECUTIVE_MAX_S
            or times[i] - times[i - 1] > CONSECUTIVE_MAX_S
        ):
            continue
        second.append(values[i] - 2 * values[i - 1] + values[i - 2])
    if len(second) < 2:
        return 0
    sigma = math.sqrt(sum(d * d for d in second) / len(second)) / math.sqrt(6)
    for level, bound in enumerate(_NOISE_BOUNDS_MG_DL):
        if sigma < bound:
            return level
    return 4


def is_jump(points: Sequence[Point], index: int) -> bool:
    """Change from the previous reading faster than 4 mg/dL/min (physiologically implausible)."""
    if index == 0:
        return False
    prev, cur = points[index - 1], points[index]
    dt_min = (cur.time_s - prev.time_s) / 60.0
    if dt_min <= 0 or dt_min * 60 > GAP_THRESHOLD_S:
        return False
    # A 1 mg/dL rounding step between readings seconds apart is not a jump.
    delta = abs(cur.glucose_mg_dl - prev.glucose_mg_dl)
    return delta > 10 and delta / max(dt_min, 1.0) > JUMP_RATE_MG_DL_PER_MIN


def is_flat(points: Sequence[Point], index: int) -> bool:
    """Identical values, without a gap, for at least 45 min up to this reading."""
    value = points[index].glucose_mg_dl
    start = index
    while start > 0:
        prev = points[start - 1]
        if prev.glucose_mg_dl != value or points[start].time_s - prev.time_s > GAP_THRESHOLD_S:
            break
        start -= 1
    return points[index].time_s - points[start].time_s >= FLAT_MIN_DURATION_S


def compression_episode(points: Sequence[Point], index: int) -> CompressionEpisode | None:
    """A drop of ≥ 25 mg/dL at ≥ 2 mg/dL/min from a stable baseline that this reading ends by
    recovering to within 15 mg/dL of the baseline, all within 90 min. Night is the caller's call.
    """
    window = _window(points, index, COMPRESSION_LOOKBACK_S)
    if len(window) < 5:
        return None
    current = window[-1]
    trough_i = min(range(len(window) - 1), key=lambda i: window[i].glucose_mg_dl)
    trough = window[trough_i]
    # The fall began where the readings stop rising when walking back from the trough.
    start_i = trough_i
    while start_i > 0 and window[start_i - 1].glucose_mg_dl >= window[start_i].glucose_mg_dl:
        start_i -= 1
    start = window[start_i]
    before = [p.glucose_mg_dl for p in window[: start_i + 1] if p.time_s >= start.time_s - 20 * 60]
    if start_i < 2 or max(before) - min(before) > COMPRESSION_RECOVERY_MG_DL:
        return None  # no stable baseline before the fall
    baseline = Point(start.time_s, sorted(before)[len(before) // 2])
    drop = start.glucose_mg_dl - trough.glucose_mg_dl
    drop_min = (trough.time_s - start.time_s) / 60.0
    if drop < COMPRESSION_MIN_DROP_MG_DL or drop_min <= 0:
        return None
    if drop / drop_min < COMPRESSION_MIN_RATE_MG_DL_PER_MIN:
        return None
    if abs(current.glucose_mg_dl - baseline.glucose_mg_dl) > COMPRESSION_RECOVERY_MG_DL:
        return None
    # Only the first reading that completes the recovery reports the episode.
    previous = window[-2]
    if abs(previous.glucose_mg_dl - baseline.glucose_mg_dl) <= COMPRESSION_RECOVERY_MG_DL:
        return None
    return CompressionEpisode(
        start_s=baseline.time_s,
        trough_s=trough.time_s,
        end_s=current.time_s,
        baseline_mg_dl=baseline.glucose_mg_dl,
        trough_mg_dl=trough.glucose_mg_dl,
    )


def _compression_dropping(points: Sequence[Point], index: int) -> bool:
    """Live suspicion: a fall of ≥ 25 mg/dL at ≥ 3 mg/dL/min within 15 min from a flat 30 min."""
    window = _window(points, index, 45 * 60)
    if len(window) < 5:
        return False
    cur = points[index]
    recent = [p for p in window if p.time_s >= cur.time_s - 15 * 60]
    earlier = [p for p in window if p.time_s < cur.time_s - 15 * 60]
    if len(earlier) < 3 or not recent:
        return False
    spread = max(p.glucose_mg_dl for p in earlier) - min(p.glucose_mg_dl for p in earlier)
    level = max(p.glucose_mg_dl for p in earlier) - 5
    top = [p for p in window[:-1] if p.glucose_mg_dl >= level][-1]
    drop = top.glucose_mg_dl - cur.glucose_mg_dl
    minutes = (cur.time_s - top.time_s) / 60.0
    return spread <= 15 and drop >= COMPRESSION_MIN_DROP_MG_DL and drop / minutes >= 3.0


def gap_before_s(points: Sequence[Point], index: int) -> float | None:
    """Seconds without readings before this one, when longer than the gap threshold."""
    if index == 0:
        return None
    gap = points[index].time_s - points[index - 1].time_s
    return gap if gap > GAP_THRESHOLD_S else None


def quality_score(
    noise: int, faults: frozenset[Fault], trend: Trend, out_of_sensor_range: bool
) -> int:
    """0–100: how far a reading can be trusted for dosing and alert decisions."""
    score = 100 - 12 * noise
    penalties = {
        Fault.JUMP: 30,
        Fault.FLAT_SIGNAL: 45,
        Fault.COMPRESSION_LOW: 40,
        Fault.WARM_UP: 30,
        Fault.NOISY: 0,  # already counted through the noise level
    }
    score -= sum(penalties[f] for f in faults)
    if trend in (Trend.NOT_COMPUTABLE, Trend.RATE_OUT_OF_RANGE):
        score -= 10
    if out_of_sensor_range:
        score -= 10
    return max(0, min(100, score))


def assess(
    points: Sequence[Point],
    index: int,
    *,
    sensor_started_s: float | None = None,
    night: bool = False,
    out_of_sensor_range: bool = False,
) -> Assessment:
    """Trend, noise, faults and quality of `points[index]` given the readings before it."""
    rate = rate_of_change(points, index)
    noise = noise_level(points, index)
    faults = _faults(points, index, noise, sensor_started_s=sensor_started_s, night=night)
    trend = arrow(rate)
    if noise >= 4 and trend is not Trend.RATE_OUT_OF_RANGE:
        trend = Trend.NOT_COMPUTABLE
    return Assessment(
        rate_mg_dl_per_min=None if rate is None else round(rate, 2),
        trend=trend,
        noise_level=noise,
        faults=faults,
        quality=quality_score(noise, faults, trend, out_of_sensor_range),
    )


def _faults(
    points: Sequence[Point],
    index: int,
    noise: int,
    *,
    sensor_started_s: float | None,
    night: bool,
) -> frozenset[Fault]:
    faults: set[Fault] = set()
    if is_jump(points, index):
        faults.add(Fault.JUMP)
    if is_flat(points, index):
        faults.add(Fault.FLAT_SIGNAL)
    if noise >= NOISY_LEVEL:
        faults.add(Fault.NOISY)
    if sensor_started_s is not None and 0 <= points[index].time_s - sensor_started_s < WARM_UP_S:
        faults.add(Fault.WARM_UP)
    if night and _compression_dropping(points, index):
        faults.add(Fault.COMPRESSION_LOW)
    return frozenset(faults)


def faults_at(
    points: Sequence[Point],
    index: int,
    *,
    sensor_started_s: float | None = None,
    night: bool = False,
) -> frozenset[Fault]:
    """`assess(...).faults` without the trend and quality (for a reading's predecessor)."""
    noise = noise_level(points, index)
    return _faults(points, index, noise, sensor_started_s=sensor_started_s, night=night)
