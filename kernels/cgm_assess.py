"""Compiled per-reading CGM assessment: the same results as
`services.cgm_ingestion.assessment` (the plain-Python reference), about 10× cheaper.

A `Series` holds one sensor's readings in time order (seconds since the epoch, mg/dL); the
functions assess the reading at `index` looking only backwards, exactly as the reference
does (tests/kernels/test_cgm_assess.py checks they agree).
"""

from __future__ import annotations

from itertools import combinations

from kernels import _cgm_assess
from services.cgm_ingestion.assessment import (
    GAP_THRESHOLD_S,
    Assessment,
    CompressionEpisode,
    Fault,
    Trend,
)
from services.runtime.fast_init import without_init

__all__ = ["Series", "assess", "compression_episode", "faults_at", "gap_before_s"]

# The kernel's trend codes and fault bits.
_TRENDS = (
    Trend.DOUBLE_UP,
    Trend.SINGLE_UP,
    Trend.FORTY_FIVE_UP,
    Trend.FLAT,
    Trend.FORTY_FIVE_DOWN,
    Trend.SINGLE_DOWN,
    Trend.DOUBLE_DOWN,
    Trend.NOT_COMPUTABLE,
    Trend.RATE_OUT_OF_RANGE,
)
_FAULT_BITS = (
    (Fault.JUMP, 1),
    (Fault.FLAT_SIGNAL, 2),
    (Fault.NOISY, 4),
    (Fault.WARM_UP, 8),
    (Fault.COMPRESSION_LOW, 16),
)


def _fault_sets() -> tuple[frozenset[Fault], ...]:
    sets: list[frozenset[Fault]] = [frozenset()] * 32
    for size in range(1, len(_FAULT_BITS) + 1):
        for chosen in combinations(_FAULT_BITS, size):
            sets[sum(bit for _, bit in chosen)] = frozenset(f for f, _ in chosen)
    return tuple(sets)


_FAULT_SETS = _fault_sets()


class Series:
    """Times (s) and glucose values (mg/dL) of one sensor, time-sorted, copied once for
    every assessment of the reading. Raises ValueError on unequal lengths or non-finite
    numbers, TypeError on non-numbers."""

    __slots__ = ("_kernel", "times_s")

    def __init__(self, times_s: list[float], values_mg_dl: list[float]) -> None:
        self._kernel = _cgm_assess._Series(times_s, values_mg_dl)
        self.times_s = times_s


def assess(
    series: Series,
    index: int,
    *,
    sensor_started_s: float | None = None,
    night: bool = False,
    out_of_sensor_range: bool = False,
) -> Assessment:
    """`assessment.assess` of the reading at `index` (IndexError outside the series)."""
    rate, trend, noise, faults, quality = _cgm_assess.assess(
        series._kernel,
        index,
        sensor_started_s is not None,
        0.0 if sensor_started_s is None else sensor_started_s,
        night,
        out_of_sensor_range,
    )
    return without_init(  # once or more per reading
        Assessment,
        rate_mg_dl_per_min=None if rate is None else round(rate, 2),
        trend=_TRENDS[trend],
        noise_level=noise,
        faults=_FAULT_SETS[faults],
        quality=quality,
    )


def faults_at(series: Series, index: int, *, night: bool = False) -> frozenset[Fault]:
    """`assessment.faults_at` without a sensor start (a reading's predecessor)."""
    return _FAULT_SETS[_cgm_assess.faults_at(series._kernel, index, night)]


def compression_episode(series: Series, index: int) -> CompressionEpisode | None:
    """`assessment.compression_episode` (night is the caller's call)."""
    found = _cgm_assess.compression_episode(series._kernel, index)
    if found is None:
        return None
    start_s, trough_s, end_s, baseline_mg_dl, trough_mg_dl = found
    return CompressionEpisode(start_s, trough_s, end_s, baseline_mg_dl, trough_mg_dl)


def gap_before_s(series: Series, index: int) -> float | None:
    """`assessment.gap_before_s`: the time without readings before this one, if a gap."""
    if index == 0:
        return None
    gap = series.times_s[index] - series.times_s[index - 1]
    return gap if gap > GAP_THRESHOLD_S else None
