"""Protobuf → JSON-ready values for the gateway's wire shapes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from langerhans.common.v1 import common_pb2

__all__ = ["NIGHTSCOUT_DIRECTION", "enum_name", "opt_time", "to_time"]


def enum_name(enum: Any, value: int, prefix: str) -> str:
    """`BOLUS_WARNING_CODE_LOW_GLUCOSE` → `low_glucose`; unknown numbers → `unspecified`."""
    try:
        name = str(enum.Name(value))
    except ValueError:
        return "unspecified"
    return name.removeprefix(prefix).lower()


def to_time(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


def opt_time(ts: Timestamp) -> datetime | None:
    """An unset (zero) timestamp is 'none', not 1970."""
    return None if ts.seconds == 0 and ts.nanos == 0 else to_time(ts)


NIGHTSCOUT_DIRECTION = {
    common_pb2.TREND_DOUBLE_UP: "DoubleUp",
    common_pb2.TREND_SINGLE_UP: "SingleUp",
    common_pb2.TREND_FORTY_FIVE_UP: "FortyFiveUp",
    common_pb2.TREND_FLAT: "Flat",
    common_pb2.TREND_FORTY_FIVE_DOWN: "FortyFiveDown",
    common_pb2.TREND_SINGLE_DOWN: "SingleDown",
    common_pb2.TREND_DOUBLE_DOWN: "DoubleDown",
    common_pb2.TREND_NOT_COMPUTABLE: "NOT COMPUTABLE",
    common_pb2.TREND_RATE_OUT_OF_RANGE: "RATE OUT OF RANGE",
}
