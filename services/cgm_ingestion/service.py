"""cgm-ingestion decisions: accept, refuse or ignore a reading; assess it and its neighbours.

`IngestionService.ingest` is called once per raw reading inside the handler's unit of work.
It reads and writes through the repository (never commits) and returns what happened, so
the handler can put the outgoing events into the outbox in the same transaction.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from kernels.cgm_assess import Series, assess, compression_episode, faults_at, gap_before_s
from services.cgm_ingestion.assessment import (
    GAP_THRESHOLD_S,
    NOISE_WINDOW_S,
    TREND_WINDOW_S,
    Assessment,
    Fault,
    Trend,
)
from services.cgm_ingestion.readings import (
    RangeFlag,
    RawReading,
    Rejection,
    RejectReason,
    ValidReading,
    validate,
)
from services.runtime.clock import Clock
from services.runtime.fast_init import without_init

__all__ = [
    "CgmEvent",
    "CgmEventKind",
    "IngestOutcome",
    "IngestionService",
    "ReadingStore",
    "StoredReading",
]

# Enough history before a reading for every backward-looking check (compression: 90 min).
HISTORY_S = 2 * 3600
# Readings after an out-of-order insert whose assessment depends on it.
AFFECTED_AFTER_S = max(TREND_WINDOW_S, NOISE_WINDOW_S, GAP_THRESHOLD_S)
NIGHT_START_HOUR = 22
NIGHT_END_HOUR = 7


@dataclass(frozen=True)
class StoredReading:
    """A validated reading with its assessment, as stored and published."""

    patient_id: str
    sensor_id: str
    device_time: datetime
    glucose_mg_dl: int
    range_flag: RangeFlag
    identity: str
    trend: Trend
    rate_mg_dl_per_min: float | None
    noise_level: int
    faults: frozenset[Fault]
    quality: int
    received_at: datetime
    backfilled: bool = False
    sensor_started_at: datetime | None = None

    def assessed(
        self,
        trend: Trend,
        rate_mg_dl_per_min: float | None,
        noise_level: int,
        faults: frozenset[Fault],
        quality: int,
    ) -> StoredReading:
        """`dataclasses.replace` with the assessment fields, without its per-call field
        introspection and frozen `__setattr__`s (twice per reading on the hot path)."""
        fields = dict(self.__dict__)
        fields.update(
            trend=trend,
            rate_mg_dl_per_min=rate_mg_dl_per_min,
            noise_level=noise_level,
            faults=faults,
            quality=quality,
        )
        return without_init(StoredReading, **fields)  # the cached time stays valid

    @staticmethod
    def new(  # noqa: PLR0917 (every field, positionally: the hot path)
        patient_id: str,
        sensor_id: str,
        device_time: datetime,
        glucose_mg_dl: int,
        range_flag: RangeFlag,
        identity: str,
        trend: Trend,
        rate_mg_dl_per_min: float | None,
        noise_level: int,
        faults: frozenset[Fault],
        quality: int,
        received_at: datetime,
        backfilled: bool,
        sensor_started_at: datetime | None,
        time_s: float,
    ) -> StoredReading:
        """`StoredReading(...)` with its device time in seconds (`time_s()`) already known,
        without the generated `__init__` (once per new reading and per row loaded)."""
        return without_init(
            StoredReading,
            patient_id=patient_id,
            sensor_id=sensor_id,
            device_time=device_time,
            glucose_mg_dl=glucose_mg_dl,
            range_flag=range_flag,
            identity=identity,
            trend=trend,
            rate_mg_dl_per_min=rate_mg_dl_per_min,
            noise_level=noise_level,
            faults=faults,
            quality=quality,
            received_at=received_at,
            backfilled=backfilled,
            sensor_started_at=sensor_started_at,
            _time_s=time_s,
        )

    def time_s(self) -> float:
        """`device_time.timestamp()`, computed once: a series is turned into times for
        every new reading."""
        cached: float | None = self.__dict__.get("_time_s")
        if cached is None:
            cached = self.device_time.timestamp()
            self.__dict__["_time_s"] = cached
        return cached


class CgmEventKind(enum.StrEnum):
    GAP_DETECTED = "gap_detected"
    SENSOR_FAULT = "sensor_fault"


@dataclass(frozen=True)
class CgmEvent:
    """A gap or a sensor fault, published on cgm.events.v1."""

    kind: CgmEventKind
    patient_id: str
    sensor_id: str
    start_time: datetime
    end_time: datetime
    fault: Fault | None = None
    detail: str = ""


@dataclass
class IngestOutcome:
    """What one raw reading led to."""

    reading: StoredReading | None = None
    rejection: Rejection | None = None
    duplicate: bool = False
    reassessed: list[StoredReading] = field(default_factory=list)
    events: list[CgmEvent] = field(default_factory=list)

    @staticmethod
    def accepted(reading: StoredReading, events: list[CgmEvent]) -> IngestOutcome:
        """`IngestOutcome(reading=reading, events=events)` without the generated `__init__`
        (once per new reading)."""
        return without_init(
            IngestOutcome,
            reading=reading,
            rejection=None,
            duplicate=False,
            reassessed=[],
            events=events,
        )


class ReadingStore(Protocol):
    """What the service needs from storage (implemented by the repository)."""

    def find(self, reading: ValidReading) -> StoredReading | None: ...

    def series(
        self, patient_id: str, sensor_id: str, start: datetime, end: datetime
    ) -> list[StoredReading]:
        """Readings of the series with start ≤ time ≤ end, in time order."""
        ...

    def add(self, reading: StoredReading) -> bool:
        """Store a new reading; False if its identity is already stored (a late duplicate)."""
        ...

    def update_assessment(self, reading: StoredReading) -> None: ...

    def add_rejection(
        self, raw: RawReading, rejection: Rejection, at: datetime, payload: bytes | None = None
    ) -> None: ...

    def first_seen(self, sensor_id: str) -> datetime | None: ...

    def has_newer(self, patient_id: str, sensor_id: str, at: datetime) -> bool:
        """True when a reading of the series later than `at` is stored."""
        ...

    def note_sensor(self, sensor_id: str, seen: datetime) -> None: ...


# What `ReadingRepository.window` returns: readings with start ≤ time ≤ end, their device
# times in seconds (equal to `time_s()`) and values as floats; None when it must be queried.
Window = tuple[list[StoredReading], list[float], list[float]]


class IngestionService:
    """Accepts raw readings one at a time, in any order, any number of times."""

    def __init__(self, store: ReadingStore, clock: Clock, night_time_zone: str = "UTC") -> None:
        self._store = store
        self._clock = clock
        self._zone = ZoneInfo(night_time_zone)
        self._utc = night_time_zone == "UTC"
        # Stores with a cache of the series (the repository) hand out its times and values.
        self._window: Callable[[str, str, int, int], Window | None] | None = getattr(
            store, "window", None
        )

    def _is_night(self, at: datetime) -> bool:
        # Asked several times per reading; a UTC time in the UTC zone needs no conversion.
        hour = at.hour if self._utc and at.tzinfo is UTC else at.astimezone(self._zone).hour
        return hour >= NIGHT_START_HOUR or hour < NIGHT_END_HOUR

    def reject(
        self, raw: RawReading, rejection: Rejection, payload: bytes | None = None
    ) -> IngestOutcome:
        """Record a refused reading (with the bytes received when they could not be parsed)."""
        self._store.add_rejection(raw, rejection, self._clock.now(), payload)
        return IngestOutcome(rejection=rejection)

    def ingest(self, raw: RawReading) -> IngestOutcome:
        now = self._clock.now()
        checked = validate(raw, now)
        if isinstance(checked, Rejection):
            return self.reject(raw, checked)
        existing = self._store.find(checked)
        if existing is not None:
            if existing.glucose_mg_dl != checked.glucose_mg_dl:
                return self.reject(
                    raw,
                    Rejection(
                        RejectReason.CONFLICTING_DUPLICATE,
                        f"{checked.glucose_mg_dl} mg/dL differs from stored "
                        f"{existing.glucose_mg_dl} mg/dL at the same sensor time",
                    ),
                )
            return IngestOutcome(duplicate=True)
        return self._accept(checked, now)

    def _accept(self, valid: ValidReading, now: datetime) -> IngestOutcome:
        t = valid.device_time
        time_s = t.timestamp()
        window = None
        if self._window is not None:
            # _us of the bounds below, exactly (whole µs; no float rounding at this size).
            t_us = round(time_s * 1_000_000)
            window = self._window(
                valid.patient_id,
                valid.sensor_id,
                t_us - HISTORY_S * 1_000_000,
                t_us + AFFECTED_AFTER_S * 1_000_000,
            )
        if window is None:
            series = self._store.series(
                valid.patient_id,
                valid.sensor_id,
                t - timedelta(seconds=HISTORY_S),
                t + timedelta(seconds=AFFECTED_AFTER_S),
            )
            series_times = [r.time_s() for r in series]
            series_values = [float(r.glucose_mg_dl) for r in series]
        else:
            series, series_times, series_values = window
        # The series is in time order, and so are its times (distinct whole µs stay distinct
        # and ordered as seconds): two bisections split it around the new reading.
        index = bisect.bisect_left(series_times, time_s)
        after = bisect.bisect_right(series_times, time_s, index)
        later = series[after:]
        sensor_start = valid.sensor_started_at or self._store.first_seen(valid.sensor_id) or t
        self._store.note_sensor(valid.sensor_id, t)
        backfilled = bool(later) or self._has_newer(valid)
        # The new reading is assessed before it exists as a StoredReading: built once.
        times = series_times[:index]
        times.append(time_s)
        times += series_times[after:]
        values = series_values[:index]
        values.append(float(valid.glucose_mg_dl))
        values += series_values[after:]
        points = Series(times, values)
        result = self._assess(points, index, sensor_start, t, valid.range_flag)
        reading = StoredReading.new(
            valid.patient_id,
            valid.sensor_id,
            t,
            valid.glucose_mg_dl,
            valid.range_flag,
            valid.identity,
            result.trend,
            result.rate_mg_dl_per_min,
            result.noise_level,
            result.faults,
            result.quality,
            now,
            backfilled,
            sensor_start,
            time_s,
        )
        if not self._store.add(reading):
            return IngestOutcome(duplicate=True)
        outcome = IngestOutcome.accepted(reading, self._events_for(reading, points, index))
        # Readings after an out-of-order insert were assessed without it: redo them.
        for offset, neighbour in enumerate(later, start=index + 1):
            updated = self._with_assessment(neighbour, points, offset)
            if updated != neighbour:
                self._store.update_assessment(updated)
                outcome.reassessed.append(updated)
        return outcome

    def _has_newer(self, valid: ValidReading) -> bool:
        return self._store.has_newer(valid.patient_id, valid.sensor_id, valid.device_time)

    def _assess(
        self,
        points: Series,
        index: int,
        started: datetime | None,
        device_time: datetime,
        range_flag: RangeFlag,
    ) -> Assessment:
        return assess(
            points,
            index,
            sensor_started_s=started.timestamp() if started else None,
            night=self._is_night(device_time),
            out_of_sensor_range=range_flag is not RangeFlag.IN_RANGE,
        )

    def _with_assessment(self, reading: StoredReading, points: Series, index: int) -> StoredReading:
        result = self._assess(
            points, index, reading.sensor_started_at, reading.device_time, reading.range_flag
        )
        return reading.assessed(
            result.trend,
            result.rate_mg_dl_per_min,
            result.noise_level,
            result.faults,
            result.quality,
        )

    def _events_for(self, reading: StoredReading, points: Series, index: int) -> list[CgmEvent]:
        events: list[CgmEvent] = []
        gap_s = gap_before_s(points, index)
        if gap_s is not None:
            events.append(
                CgmEvent(
                    kind=CgmEventKind.GAP_DETECTED,
                    patient_id=reading.patient_id,
                    sensor_id=reading.sensor_id,
                    start_time=datetime.fromtimestamp(points.times_s[index - 1], UTC),
                    end_time=reading.device_time,
                    detail=f"no readings for {gap_s / 60:.0f} min",
                )
            )
        night = self._is_night(reading.device_time)
        # Most readings carry no fault: nothing can start, so the predecessor's faults (a
        # kernel call) are not needed.
        if reading.faults:
            previous_faults: frozenset[Fault] = frozenset()
            if index > 0:
                # A fault is reported once when it starts, not on every reading that carries it.
                previous_faults = faults_at(points, index - 1, night=night)
            for fault in sorted(reading.faults - previous_faults - {Fault.WARM_UP}):
                events.append(self._fault(reading, fault, reading.device_time, f"{fault} started"))
            if Fault.WARM_UP in reading.faults and not self._warm_up_reported(
                points, index, reading
            ):
                events.append(self._fault(reading, Fault.WARM_UP, reading.device_time, "warm-up"))
        if night:
            episode = compression_episode(points, index)
            if episode is not None:
                events.append(
                    CgmEvent(
                        kind=CgmEventKind.SENSOR_FAULT,
                        patient_id=reading.patient_id,
                        sensor_id=reading.sensor_id,
                        start_time=datetime.fromtimestamp(episode.start_s, UTC),
                        end_time=datetime.fromtimestamp(episode.end_s, UTC),
                        fault=Fault.COMPRESSION_LOW,
                        detail=(
                            f"drop {episode.baseline_mg_dl:.0f} → {episode.trough_mg_dl:.0f} "
                            "mg/dL and recovery"
                        ),
                    )
                )
        return events

    @staticmethod
    def _warm_up_reported(points: Series, index: int, reading: StoredReading) -> bool:
        started = reading.sensor_started_at
        return (
            index > 0 and started is not None and points.times_s[index - 1] >= started.timestamp()
        )

    @staticmethod
    def _fault(reading: StoredReading, fault: Fault, at: datetime, detail: str) -> CgmEvent:
        return CgmEvent(
            kind=CgmEventKind.SENSOR_FAULT,
            patient_id=reading.patient_id,
            sensor_id=reading.sensor_id,
            start_time=at,
            end_time=at,
            fault=fault,
            detail=detail,
        )
