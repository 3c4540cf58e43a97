"""Validation, normalisation, trend, noise, faults and the ingest decisions (fake store)."""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.cgm_ingestion.assessment import (
    Fault,
    Point,
    Trend,
    arrow,
    assess,
    compression_episode,
    is_flat,
    noise_level,
    rate_of_change,
)
from services.cgm_ingestion.readings import (
    MMOL_L_TO_MG_DL,
    RangeFlag,
    RawReading,
    Rejection,
    RejectReason,
    ValidReading,
    validate,
)
from services.cgm_ingestion.service import (
    CgmEventKind,
    IngestionService,
    StoredReading,
)
from services.runtime.clock import FixedClock

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def raw(minute: float, value: float, unit: str = "mg/dL", **kw) -> RawReading:
    fields: dict[str, Any] = {
        "patient_id": "p1",
        "sensor_id": "s1",
        "device_time": T0 + timedelta(minutes=minute),
        "value": value,
        "unit": unit,
        "sensor_started_at": T0 - timedelta(days=1),
    }
    fields.update(kw)
    return RawReading(**fields)


# ----------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (raw(0, 100, patient_id=""), RejectReason.MISSING_PATIENT),
        (raw(0, 100, sensor_id=""), RejectReason.MISSING_SENSOR),
        (raw(0, 100, device_time=None), RejectReason.MISSING_TIMESTAMP),
        (raw(0, 100, device_time=datetime(2026, 3, 2, 12)), RejectReason.NAIVE_TIMESTAMP),
        (raw(6, 100), RejectReason.FUTURE_TIMESTAMP),
        (raw(-60 * 24 * 40, 100), RejectReason.TOO_OLD),
        (raw(0, math.nan), RejectReason.NON_FINITE_VALUE),
        (raw(0, math.inf), RejectReason.NON_FINITE_VALUE),
        (raw(0, 100, unit="g/L"), RejectReason.UNKNOWN_UNIT),
        (raw(0, -5), RejectReason.IMPLAUSIBLE_VALUE),
        (raw(0, 0), RejectReason.IMPLAUSIBLE_VALUE),
        (raw(0, 2000), RejectReason.IMPLAUSIBLE_VALUE),
    ],
)
def test_bad_readings_are_refused_with_a_reason(reading: RawReading, reason: RejectReason) -> None:
    result = validate(reading, T0)
    assert isinstance(result, Rejection)
    assert result.reason is reason
    assert result.detail


def test_four_minutes_ahead_is_accepted_but_six_is_not() -> None:
    assert isinstance(validate(raw(4, 100), T0), ValidReading)
    assert isinstance(validate(raw(6, 100), T0), Rejection)


def test_mmol_converts_with_the_canonical_factor_and_rounds() -> None:
    result = validate(raw(0, 5.5, unit="mmol/L"), T0)
    assert isinstance(result, ValidReading)
    assert result.glucose_mg_dl == round(5.5 * MMOL_L_TO_MG_DL) == 99


@pytest.mark.parametrize(
    ("value", "stored", "flag"),
    [(30, 40, RangeFlag.LOW), (39.4, 40, RangeFlag.LOW), (40, 40, RangeFlag.IN_RANGE),
     (400, 400, RangeFlag.IN_RANGE), (401, 400, RangeFlag.HIGH), (650, 400, RangeFlag.HIGH)],
)  # fmt: skip
def test_sensor_range_is_clamped_with_a_flag(value: float, stored: int, flag: RangeFlag) -> None:
    result = validate(raw(0, value), T0)
    assert isinstance(result, ValidReading)
    assert (result.glucose_mg_dl, result.range_flag) == (stored, flag)


def test_identity_ignores_time_zone_spelling() -> None:
    from zoneinfo import ZoneInfo

    utc = validate(raw(0, 100), T0)
    berlin = validate(raw(0, 100, device_time=T0.astimezone(ZoneInfo("Europe/Berlin"))), T0)
    assert isinstance(utc, ValidReading)
    assert isinstance(berlin, ValidReading)
    assert utc.identity == berlin.identity
    assert berlin.device_time == T0


# ----------------------------------------------------------------- assessment


def series(values: Sequence[float], step_min: float = 5.0) -> list[Point]:
    return [Point(i * step_min * 60, v) for i, v in enumerate(values)]


@pytest.mark.parametrize(
    ("rate", "trend"),
    [(3.5, Trend.DOUBLE_UP), (2.5, Trend.SINGLE_UP), (1.5, Trend.FORTY_FIVE_UP),
     (0.5, Trend.FLAT), (-0.5, Trend.FLAT), (-1.5, Trend.FORTY_FIVE_DOWN),
     (-2.5, Trend.SINGLE_DOWN), (-3.5, Trend.DOUBLE_DOWN), (None, Trend.NOT_COMPUTABLE),
     (15.0, Trend.RATE_OUT_OF_RANGE)],
)  # fmt: skip
def test_arrow_thresholds(rate: float | None, trend: Trend) -> None:
    assert arrow(rate) is trend


@pytest.mark.parametrize("slope", [-3.2, -2.2, -1.2, 0.0, 1.2, 2.2, 3.2])
def test_rate_is_the_regression_slope_of_the_last_15_min(slope: float) -> None:
    points = series([100 + slope * 5 * i for i in range(8)])
    rate = rate_of_change(points, 7)
    assert rate == pytest.approx(slope, abs=1e-9)


def test_rate_needs_three_readings_over_nine_minutes() -> None:
    assert rate_of_change(series([100, 110]), 1) is None
    assert rate_of_change(series([100, 105, 110], step_min=2), 2) is None
    assert rate_of_change(series([100, 105, 110]), 2) == pytest.approx(1.0)


def test_noise_level_grows_with_sensor_noise() -> None:
    rng = random.Random(4)
    clean = series([120 + 0.8 * i for i in range(7)])
    levels = []
    for sd in (0.0, 3.0, 6.0, 10.0, 20.0):
        noisy = [Point(p.time_s, p.glucose_mg_dl + rng.gauss(0, sd)) for p in clean]
        levels.append(noise_level(noisy * 1, 6))
    assert levels[0] == 0
    assert levels[-1] == 4
    assert levels == sorted(levels)


def test_flat_signal_after_45_minutes_of_identical_values() -> None:
    points = series([110] * 10)
    assert not is_flat(points, 8)  # 40 min
    assert is_flat(points, 9)  # 45 min


def test_jump_is_flagged() -> None:
    points = series([120, 121, 122, 160, 161])
    assert Fault.JUMP in assess(points, 3).faults
    assert Fault.JUMP not in assess(points, 2).faults


def test_compression_low_drop_and_recovery_is_recognised() -> None:
    values = [130, 131, 130, 129, 130, 100, 80, 78, 95, 128]
    points = series(values)
    assert compression_episode(points, 8) is None  # not yet recovered
    episode = compression_episode(points, 9)
    assert episode is not None
    assert episode.trough_mg_dl == 78
    assert Fault.COMPRESSION_LOW in assess(points, 6, night=True).faults
    assert Fault.COMPRESSION_LOW not in assess(points, 6, night=False).faults


def test_a_slow_physiological_fall_is_not_compression() -> None:
    values = [130 - 1.5 * 5 * i for i in range(10)] + [128]
    assert compression_episode(series(values), 10) is None


def test_quality_drops_with_faults() -> None:
    clean = assess(series([120 + i for i in range(8)]), 7)
    flat = assess(series([110] * 12), 11)
    assert clean.quality >= 90
    assert flat.quality < clean.quality - 30


# ----------------------------------------------------------------- ingest decisions


class FakeStore:
    def __init__(self) -> None:
        self.rows: dict[str, StoredReading] = {}
        self.rejections: list[tuple[RawReading, Rejection]] = []
        self.sensors: dict[str, datetime] = {}

    def find(self, reading: ValidReading) -> StoredReading | None:
        return self.rows.get(reading.identity)

    def series(self, patient_id, sensor_id, start, end):
        rows = [
            r
            for r in self.rows.values()
            if r.patient_id == patient_id
            and r.sensor_id == sensor_id
            and start <= r.device_time <= end
        ]
        return sorted(rows, key=lambda r: r.device_time)

    def add(self, reading: StoredReading) -> bool:
        assert reading.identity not in self.rows
        self.rows[reading.identity] = reading
        return True

    def update_assessment(self, reading: StoredReading) -> None:
        self.rows[reading.identity] = reading

    def add_rejection(self, raw, rejection, at, payload=None) -> None:
        self.rejections.append((raw, rejection))

    def first_seen(self, sensor_id):
        return self.sensors.get(sensor_id)

    def note_sensor(self, sensor_id, seen):
        self.sensors[sensor_id] = min(seen, self.sensors.get(sensor_id, seen))

    def latest_time(self, patient_id, sensor_id):
        times = [
            r.device_time
            for r in self.series(
                patient_id, sensor_id, T0 - timedelta(days=99), T0 + timedelta(days=99)
            )
        ]
        return max(times) if times else None

    def has_newer(self, patient_id, sensor_id, at):
        latest = self.latest_time(patient_id, sensor_id)
        return latest is not None and latest > at


def make_service(now: datetime = T0 + timedelta(hours=3)) -> tuple[IngestionService, FakeStore]:
    store = FakeStore()
    return IngestionService(store, FixedClock(now)), store


def test_duplicates_are_ignored_and_conflicts_recorded() -> None:
    service, store = make_service()
    assert service.ingest(raw(0, 100)).reading is not None
    assert service.ingest(raw(0, 100)).duplicate
    conflict = service.ingest(raw(0, 140))
    assert conflict.rejection is not None
    assert conflict.rejection.reason is RejectReason.CONFLICTING_DUPLICATE
    assert len(store.rows) == 1
    assert [r.reason for _, r in store.rejections] == [RejectReason.CONFLICTING_DUPLICATE]


def test_out_of_order_arrival_gives_the_same_trends_as_in_order() -> None:
    minutes = list(range(0, 60, 5))
    values = [100 + 2.2 * m for m in minutes]
    in_order, _ = make_service()
    for m, v in zip(minutes, values, strict=True):
        in_order.ingest(raw(m, v))
    shuffled, store = make_service()
    order = list(zip(minutes, values, strict=True))
    random.Random(7).shuffle(order)
    for m, v in order:
        shuffled.ingest(raw(m, v))
    expected = {r.identity: (r.trend, r.rate_mg_dl_per_min) for r in in_order._store.rows.values()}  # type: ignore[attr-defined]
    actual = {r.identity: (r.trend, r.rate_mg_dl_per_min) for r in store.rows.values()}
    assert actual == expected
    assert (
        expected[min(store.rows.values(), key=lambda r: r.device_time).identity][0]
        is Trend.NOT_COMPUTABLE
    )
    latest = max(store.rows.values(), key=lambda r: r.device_time)
    assert latest.trend is Trend.SINGLE_UP


def test_backfill_is_marked_and_neighbours_reassessed() -> None:
    service, _ = make_service()
    for m in (0, 5, 10, 20, 25, 30):
        service.ingest(raw(m, 100 + m))
    outcome = service.ingest(raw(15, 115))
    assert outcome.reading is not None
    assert outcome.reading.backfilled
    assert {r.device_time for r in outcome.reassessed} <= {
        T0 + timedelta(minutes=m) for m in (20, 25, 30)
    }
    assert outcome.reassessed


def test_gap_event_when_readings_resume() -> None:
    service, _ = make_service()
    service.ingest(raw(0, 100))
    service.ingest(raw(5, 101))
    outcome = service.ingest(raw(30, 103))
    gaps = [e for e in outcome.events if e.kind is CgmEventKind.GAP_DETECTED]
    assert len(gaps) == 1
    assert gaps[0].start_time == T0 + timedelta(minutes=5)
    assert gaps[0].end_time == T0 + timedelta(minutes=30)
    assert not service.ingest(raw(35, 104)).events


def test_flat_fault_is_reported_once() -> None:
    service, _ = make_service()
    faults = []
    for i in range(20):
        faults += [e.fault for e in service.ingest(raw(5 * i, 111)).events]
    assert faults == [Fault.FLAT_SIGNAL]


def test_warm_up_reported_for_a_new_sensor() -> None:
    service, _ = make_service()
    started = T0 - timedelta(minutes=10)
    first = service.ingest(raw(0, 100, sensor_started_at=started))
    assert first.reading is not None
    assert Fault.WARM_UP in first.reading.faults
    assert [e.fault for e in first.events] == [Fault.WARM_UP]
    second = service.ingest(raw(5, 101, sensor_started_at=started))
    assert not second.events
    late = service.ingest(raw(170, 101, sensor_started_at=started))
    assert late.reading is not None
    assert Fault.WARM_UP not in late.reading.faults


def test_rejections_never_raise() -> None:
    service, store = make_service()
    for bad in (raw(0, math.nan), raw(0, 1, unit="?"), raw(0, 100, device_time=None)):
        assert service.ingest(bad).rejection is not None
    assert len(store.rejections) == 3
    assert not store.rows


def test_series_stays_sorted() -> None:
    service, store = make_service()
    for m in (10, 0, 20, 5, 15):
        service.ingest(raw(m, 100))
    times = [r.device_time for r in store.series("p1", "s1", T0, T0 + timedelta(hours=1))]
    assert times == sorted(times)
    assert bisect.bisect(times, T0) == 1
