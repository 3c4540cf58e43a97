"""Nightscout v1 query strings: `find[field][$op]=value`, `find[field]=value` and `count`.

Only fields backed by an indexed column are queryable; anything else is refused with a clear
error rather than silently ignored (an ignored filter would return the wrong records).
Time fields are compared as instants, whatever format the client used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.orm import InstrumentedAttribute

from gateway.errors import InvalidRequest

__all__ = ["FieldSpec", "NsQuery", "parse_query", "parse_time_ms"]

_FIND = re.compile(r"^find\[([A-Za-z_][A-Za-z0-9_.]*)\](?:\[(\$[a-z]+)\])?$")
_OPS = {"$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in"}
MAX_COUNT = 10_000


def parse_time_ms(value: Any) -> int:
    """Epoch milliseconds from a number (ms) or an ISO-8601 string; UTC if no offset."""
    if isinstance(value, bool):
        raise ValueError("not a time")
    if isinstance(value, int | float):
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"-?\d+(\.\d+)?", text):
        return int(float(text))
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


@dataclass(frozen=True)
class FieldSpec:
    column: InstrumentedAttribute[Any]
    convert: Callable[[str], Any]


@dataclass(frozen=True)
class NsQuery:
    conditions: list[ColumnElement[bool]]
    count: int


def _storable(value: Any) -> Any:
    """A value the database can compare: 64-bit integers, finite floats (found by tests/fuzz:
    a 20-digit date answered 500 from the SQLite driver)."""
    if isinstance(value, int) and not -(2**63) <= value < 2**63:
        raise ValueError("number out of range")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("number not finite")
    return value


def _condition(spec: FieldSpec, op: str, raw: str) -> ColumnElement[bool]:
    column: Any = spec.column
    result: ColumnElement[bool]
    if op == "$in":
        result = column.in_([_storable(spec.convert(v)) for v in raw.split("|")])
        return result
    value = _storable(spec.convert(raw))
    match op:
        case "$eq":
            result = column == value
        case "$ne":
            result = column != value
        case "$gt":
            result = column > value
        case "$gte":
            result = column >= value
        case "$lt":
            result = column < value
        case _:
            result = column <= value
    return result


def parse_query(
    params: Mapping[str, str] | list[tuple[str, str]],
    fields: Mapping[str, FieldSpec],
    default_count: int,
) -> NsQuery:
    items = list(params.items()) if isinstance(params, Mapping) else params
    conditions: list[ColumnElement[bool]] = []
    count = default_count
    for key, raw in items:
        if key == "count":
            try:
                count = int(raw)
            except ValueError as exc:
                raise InvalidRequest("count must be an integer") from exc
            if count < 0:
                raise InvalidRequest("count must not be negative")
            count = min(count, MAX_COUNT) if count else MAX_COUNT
            continue
        match = _FIND.match(key)
        if match is None:
            continue  # token, other Nightscout options are not filters
        field, op = match.group(1), match.group(2) or "$eq"
        if op not in _OPS:
            raise InvalidRequest(f"unsupported operator {op}")
        spec = fields.get(field)
        if spec is None:
            raise InvalidRequest(
                f"cannot filter on '{field}'; queryable fields: {', '.join(sorted(fields))}"
            )
        try:
            conditions.append(_condition(spec, op, raw))
        except (ValueError, TypeError) as exc:
            raise InvalidRequest(f"bad value for find[{field}]: {raw!r}") from exc
    return NsQuery(conditions, count)
