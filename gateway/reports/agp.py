"""Ambulatory glucose profile (AGP) of one person: consensus metrics, percentiles by time of
day and one trace per day (2019 international consensus on time in range, Battelino et al.).

The period is `days` whole local days ending with today (today up to now). Metrics come from
the compiled kernel (`kernels.metrics`); coverage is the share of 5-minute slots of the period
that hold at least one reading, so a 1-minute sensor cannot report more than 100 %.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np

from gateway.glucose.source import GlucoseReading, GlucoseSource
from kernels.metrics import glucose_metrics

__all__ = [
    "AGP_PERCENTILES",
    "BIN_MIN",
    "MIN_COVERAGE_PCT",
    "AgpMetrics",
    "AgpReport",
    "DailyTrace",
    "PercentileBin",
    "build_agp",
    "fetch_readings",
]

BIN_MIN = 15  # percentile bins by time of day
SMOOTH_BINS = 1  # pool ±1 neighbouring bin (a 45-minute window), circular over midnight
MIN_READINGS_PER_BIN = 5  # fewer: no percentile is drawn rather than a made-up one
AGP_PERCENTILES = (5, 25, 50, 75, 95)
MIN_COVERAGE_PCT = 70.0  # consensus: ≥ 70 % of 14 days for a report that can be relied on
SLOT_MIN = 5
PAGE_SIZE = 5000
# Readings outside the sensor range arrive as LOW/HIGH; they count at the range edge.
SENSOR_MIN_MG_DL = 39.0
SENSOR_MAX_MG_DL = 401.0


@dataclass(frozen=True)
class AgpMetrics:
    readings: int
    coverage_pct: float
    mean_mg_dl: float | None
    sd_mg_dl: float | None
    cv_pct: float | None
    gmi_pct: float | None
    tir_pct: float | None  # 70–180 mg/dL
    tbr70_pct: float | None  # < 70
    tbr54_pct: float | None  # < 54
    tar180_pct: float | None  # > 180
    tar250_pct: float | None  # > 250
    sufficient_data: bool


@dataclass(frozen=True)
class PercentileBin:
    minute_of_day: int  # bin centre
    p5: float | None
    p25: float | None
    p50: float | None
    p75: float | None
    p95: float | None


@dataclass(frozen=True)
class DailyTrace:
    date: date
    minutes: list[int]  # minutes after local midnight
    glucose_mg_dl: list[int]
    tir_pct: float | None


@dataclass(frozen=True)
class AgpReport:
    person_id: str
    display_name: str
    timezone: str
    days: int
    start: datetime
    end: datetime
    metrics: AgpMetrics
    percentiles: list[PercentileBin]
    daily: list[DailyTrace]


def fetch_readings(
    source: GlucoseSource, person_id: str, start: datetime, end: datetime
) -> list[GlucoseReading]:
    """Every reading in [start, end), oldest first, paging through the source."""
    out: list[GlucoseReading] = []
    page_end = end
    while True:
        page = source.readings(person_id, start, page_end, PAGE_SIZE)
        out.extend(page)
        if len(page) < PAGE_SIZE:
            break
        page_end = page[-1].time  # exclusive: the next page starts strictly before it
    out.reverse()
    return out


def _metrics(values: np.ndarray, times_s: np.ndarray, start: datetime, end: datetime) -> AgpMetrics:
    period_s = max((end - start).total_seconds(), 1.0)
    slots_total = max(int(np.ceil(period_s / (SLOT_MIN * 60))), 1)
    slots = np.unique(((times_s - start.timestamp()) // (SLOT_MIN * 60)).astype(np.int64))
    coverage = 100.0 * min(len(slots), slots_total) / slots_total
    if len(values) == 0:
        return AgpMetrics(
            readings=0,
            coverage_pct=round(coverage, 1),
            mean_mg_dl=None,
            sd_mg_dl=None,
            cv_pct=None,
            gmi_pct=None,
            tir_pct=None,
            tbr70_pct=None,
            tbr54_pct=None,
            tar180_pct=None,
            tar250_pct=None,
            sufficient_data=False,
        )
    m = glucose_metrics(values)
    sd = m.sd_mg_dl if len(values) > 1 else None
    cv = m.cv_pct if len(values) > 1 else None
    return AgpMetrics(
        readings=m.n,
        coverage_pct=round(coverage, 1),
        mean_mg_dl=round(m.mean_mg_dl, 1),
        sd_mg_dl=None if sd is None else round(sd, 1),
        cv_pct=None if cv is None else round(cv, 1),
        gmi_pct=round(m.gmi_pct, 1),
        tir_pct=round(m.tir_pct, 1),
        tbr70_pct=round(m.tbr70_pct, 1),
        tbr54_pct=round(m.tbr54_pct, 1),
        tar180_pct=round(m.tar180_pct, 1),
        tar250_pct=round(m.tar250_pct, 1),
        sufficient_data=coverage >= MIN_COVERAGE_PCT,
    )


def _percentiles(values: np.ndarray, minute_of_day: np.ndarray) -> list[PercentileBin]:
    n_bins = 1440 // BIN_MIN
    bin_of = (minute_of_day // BIN_MIN).astype(np.int64)
    by_bin = [values[bin_of == b] for b in range(n_bins)]
    out: list[PercentileBin] = []
    for b in range(n_bins):
        pooled = np.concatenate(
            [by_bin[(b + k) % n_bins] for k in range(-SMOOTH_BINS, SMOOTH_BINS + 1)]
        )
        centre = b * BIN_MIN + BIN_MIN // 2
        if len(pooled) < MIN_READINGS_PER_BIN:
            out.append(PercentileBin(centre, None, None, None, None, None))
            continue
        p = np.percentile(pooled, AGP_PERCENTILES)
        out.append(PercentileBin(centre, *(round(float(x), 1) for x in p)))
    return out


def build_agp(
    source: GlucoseSource,
    person_id: str,
    *,
    display_name: str,
    now: datetime,
    days: int,
    tz: ZoneInfo,
) -> AgpReport:
    local_now = now.astimezone(tz)
    first_day = local_now.date() - timedelta(days=days - 1)
    start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=tz)
    readings = fetch_readings(source, person_id, start, now)
    values = np.clip(
        np.array([r.glucose_mg_dl for r in readings], dtype=np.float64),
        SENSOR_MIN_MG_DL,
        SENSOR_MAX_MG_DL,
    )
    times_s = np.array([r.time.timestamp() for r in readings], dtype=np.float64)
    local = [r.time.astimezone(tz) for r in readings]
    minute_of_day = np.array([t.hour * 60 + t.minute for t in local], dtype=np.int64)

    daily: list[DailyTrace] = []
    for offset in range(days):
        day = first_day + timedelta(days=offset)
        idx = [i for i, t in enumerate(local) if t.date() == day]
        day_values = values[idx]
        tir = (
            round(100.0 * float(np.mean((day_values >= 70) & (day_values <= 180))), 1)
            if len(day_values)
            else None
        )
        daily.append(
            DailyTrace(
                date=day,
                minutes=[int(minute_of_day[i]) for i in idx],
                glucose_mg_dl=[int(values[i]) for i in idx],
                tir_pct=tir,
            )
        )
    return AgpReport(
        person_id=person_id,
        display_name=display_name,
        timezone=tz.key,
        days=days,
        start=start,
        end=now,
        metrics=_metrics(values, times_s, start, now),
        percentiles=_percentiles(values, minute_of_day),
        daily=daily,
    )
