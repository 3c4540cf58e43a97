"""CGM readings at the boundary: parse, validate, normalise to mg/dL, identify.

A raw reading either becomes a `ValidReading` (canonical mg/dL, clamped to the sensor range
with a LOW/HIGH flag) or a `Rejection` with a machine-readable reason. Nothing in between:
the caller stores the rejection, it never drops it.
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.runtime.fast_init import without_init

__all__ = [
    "MAX_FUTURE",
    "MAX_PLAUSIBLE_RAW_MG_DL",
    "MAX_SENSOR_MG_DL",
    "MIN_SENSOR_MG_DL",
    "MMOL_L_TO_MG_DL",
    "RangeFlag",
    "RawReading",
    "RejectReason",
    "Rejection",
    "ValidReading",
    "identity_hash",
    "to_mg_dl",
    "validate",
]

MIN_SENSOR_MG_DL = 40
MAX_SENSOR_MG_DL = 400
MMOL_L_TO_MG_DL = 18.01559
# Beyond this a number is not a glucose reading at all (a unit mix-up or garbage), not "HIGH".
MAX_PLAUSIBLE_RAW_MG_DL = 1000.0
MAX_FUTURE = timedelta(minutes=5)
# Older than a sensor's own memory plus the hub's outbox: a replay of something else.
MAX_AGE = timedelta(days=30)


class RangeFlag(enum.StrEnum):
    """Where the sensor reported the value relative to its measurable range."""

    IN_RANGE = "in_range"
    LOW = "low"  # reported below 40 mg/dL: stored as 40, shown as "LOW"
    HIGH = "high"  # reported above 400 mg/dL: stored as 400, shown as "HIGH"


class RejectReason(enum.StrEnum):
    """Why a raw reading was refused."""

    UNDECODABLE = "undecodable"
    MISSING_PATIENT = "missing_patient"
    MISSING_SENSOR = "missing_sensor"
    MISSING_TIMESTAMP = "missing_timestamp"
    NAIVE_TIMESTAMP = "naive_timestamp"
    FUTURE_TIMESTAMP = "future_timestamp"
    TOO_OLD = "too_old"
    UNKNOWN_UNIT = "unknown_unit"
    NON_FINITE_VALUE = "non_finite_value"
    IMPLAUSIBLE_VALUE = "implausible_value"
    CONFLICTING_DUPLICATE = "conflicting_duplicate"


@dataclass(frozen=True)
class RawReading:
    """A reading as received; any field may be missing or wrong."""

    patient_id: str
    sensor_id: str
    device_time: datetime | None
    value: float
    unit: str  # "mg/dL" or "mmol/L"
    sensor_started_at: datetime | None = None
    event_id: str = ""


@dataclass(frozen=True)
class ValidReading:
    """A reading that passed the boundary: canonical mg/dL, UTC, identified."""

    patient_id: str
    sensor_id: str
    device_time: datetime
    glucose_mg_dl: int
    range_flag: RangeFlag
    identity: str
    sensor_started_at: datetime | None


@dataclass(frozen=True)
class Rejection:
    """A refused reading and why."""

    reason: RejectReason
    detail: str


def to_mg_dl(value: float, unit: str) -> float | None:
    """`value` in mg/dL, or None for an unknown unit."""
    # The spellings the Kafka handler produces, before normalising anything else.
    if unit == "mg/dL":
        return value
    if unit == "mmol/L":
        return value * MMOL_L_TO_MG_DL
    normalised = unit.strip().lower().replace(" ", "")
    if normalised in ("mg/dl", "mg_dl", "mgdl"):
        return value
    if normalised in ("mmol/l", "mmol_l", "mmoll"):
        return value * MMOL_L_TO_MG_DL
    return None


def identity_hash(patient_id: str, sensor_id: str, device_time: datetime) -> str:
    """Identity of a reading: the same sensor cannot measure twice at the same second."""
    instant = int(device_time.timestamp())
    return hashlib.sha256(f"{patient_id}|{sensor_id}|{instant}".encode()).hexdigest()[:32]


def validate(raw: RawReading, now: datetime) -> ValidReading | Rejection:
    """Accept or refuse one raw reading at time `now`."""
    if not raw.patient_id:
        return Rejection(RejectReason.MISSING_PATIENT, "patient id is empty")
    if not raw.sensor_id:
        return Rejection(RejectReason.MISSING_SENSOR, "sensor id is empty")
    if raw.device_time is None:
        return Rejection(RejectReason.MISSING_TIMESTAMP, "device time is missing")
    if raw.device_time.tzinfo is None or raw.device_time.utcoffset() is None:
        return Rejection(RejectReason.NAIVE_TIMESTAMP, "device time has no time zone")
    if raw.device_time - now > MAX_FUTURE:
        ahead_s = (raw.device_time - now).total_seconds()
        return Rejection(RejectReason.FUTURE_TIMESTAMP, f"device time {ahead_s:.0f} s ahead")
    if now - raw.device_time > MAX_AGE:
        return Rejection(RejectReason.TOO_OLD, f"device time older than {MAX_AGE.days} days")
    if not math.isfinite(raw.value):
        return Rejection(RejectReason.NON_FINITE_VALUE, f"value {raw.value!r}")
    mg_dl = to_mg_dl(raw.value, raw.unit)
    if mg_dl is None:
        return Rejection(RejectReason.UNKNOWN_UNIT, f"unit {raw.unit!r}")
    if mg_dl <= 0 or mg_dl > MAX_PLAUSIBLE_RAW_MG_DL:
        return Rejection(RejectReason.IMPLAUSIBLE_VALUE, f"{mg_dl:.1f} mg/dL")
    rounded = round(mg_dl)
    if rounded < MIN_SENSOR_MG_DL:
        flag, rounded = RangeFlag.LOW, MIN_SENSOR_MG_DL
    elif rounded > MAX_SENSOR_MG_DL:
        flag, rounded = RangeFlag.HIGH, MAX_SENSOR_MG_DL
    else:
        flag = RangeFlag.IN_RANGE
    utc_time = raw.device_time.astimezone(now.tzinfo)
    return without_init(  # once per reading on the hot path
        ValidReading,
        patient_id=raw.patient_id,
        sensor_id=raw.sensor_id,
        device_time=utc_time,
        glucose_mg_dl=rounded,
        range_flag=flag,
        identity=identity_hash(raw.patient_id, raw.sensor_id, utc_time),
        sensor_started_at=raw.sensor_started_at,
    )
