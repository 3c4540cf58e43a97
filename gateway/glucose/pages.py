"""Glucose pages as JSON bytes, built once per reading and reused while nothing changed.

The last-24-hours query is the hottest read there is (every app and follower polls it). For
the embedded store (`NightscoutEntriesSource` on SQLite) each reading is serialised once and
kept per person with the range that was loaded; a request whose range lies inside it is cut
out with two binary searches and joined. An entry is used only while the database's
`data_version` is unchanged (`security.access_cache.ChangeWatch`): any commit anywhere (a new
reading, a deleted entry) drops it, so a page is never older than the database. Other sources
(the cgm-ingestion service) are read on every request and only serialised here.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio.to_thread
import orjson

from gateway.glucose.source import GlucoseReading, GlucoseSource, NightscoutEntriesSource
from gateway.security.access_cache import ChangeWatch

__all__ = ["GlucosePages", "page_json", "reading_json"]

_MARGIN = timedelta(hours=1)  # loaded beyond the asked range, so the next minutes' asks hit
_MAX_CACHED_RANGE = timedelta(hours=48)
_MAX_CACHED_READINGS = 4000
_MAX_PEOPLE = 2000
_OPTIONS = orjson.OPT_UTC_Z  # same text as pydantic: 2026-01-15T12:00:00Z


def reading_json(reading: GlucoseReading) -> bytes:
    """One reading in the `GlucoseReadingOut` shape."""
    return orjson.dumps(
        {
            "record_id": reading.record_id,
            "time": reading.time,
            "glucose_mg_dl": reading.glucose_mg_dl,
            "trend": reading.trend,
            "trend_rate_mg_dl_per_min": reading.trend_rate_mg_dl_per_min,
            "device": reading.device,
        },
        option=_OPTIONS,
    )


def page_json(items: list[bytes], next_end: datetime | None) -> bytes:
    """A `GlucosePage` from serialised readings (newest first)."""
    return b"".join(
        (
            b'{"readings":[',
            b",".join(items),
            b'],"next_end":',
            orjson.dumps(next_end, option=_OPTIONS),
            b"}",
        )
    )


@dataclass(frozen=True)
class _Loaded:
    version: int
    start_ms: int
    end_ms: int
    times_ms: list[int]  # ascending
    items: list[bytes]  # same order


def _ms(value: datetime) -> int:
    return int(value.timestamp() * 1000)


class GlucosePages:
    def __init__(
        self, source: GlucoseSource, watch: ChangeWatch, read_source: GlucoseSource | None
    ) -> None:
        self._source = source
        self._watch = watch
        # The same store through read-only (DEFERRED) sessions, when the source is the
        # embedded one: the only case a page may be reused.
        self._cacheable: NightscoutEntriesSource | None = None
        if watch.exact and isinstance(read_source, NightscoutEntriesSource):
            self._cacheable = read_source
        self._loaded: dict[str, _Loaded] = {}

    async def page(
        self,
        person_id: str,
        start: datetime,
        end: datetime,
        limit: int,
        version: int | None = None,
    ) -> bytes:
        """`GlucosePage` JSON: readings with start <= time < end, newest first, at most limit.

        `version`: the request's earlier look at the change watch, if it took one (any look
        before this read is as good as a fresh one; see access_cache.AccessGuard.patient).
        """
        if self._cacheable is None or end - start > _MAX_CACHED_RANGE:
            return await anyio.to_thread.run_sync(self._direct, person_id, start, end, limit)
        start_ms, end_ms = _ms(start), _ms(end)
        if version is None:
            version = self._watch.version()
        loaded = self._loaded.get(person_id)
        if (
            loaded is None
            or loaded.version != version
            or start_ms < loaded.start_ms
            or end_ms > loaded.end_ms
        ):
            got = await anyio.to_thread.run_sync(self._load, person_id, start, end, version)
            if got is None:
                return await anyio.to_thread.run_sync(self._direct, person_id, start, end, limit)
            loaded = got
        lo = bisect_left(loaded.times_ms, start_ms)
        hi = bisect_left(loaded.times_ms, end_ms)
        first = max(lo, hi - limit)
        items = loaded.items[first:hi]
        items.reverse()
        next_end = None
        if len(items) == limit:
            next_end = datetime.fromtimestamp(loaded.times_ms[first] / 1000, tz=UTC)
        return page_json(items, next_end)

    def _load(self, person_id: str, start: datetime, end: datetime, version: Any) -> _Loaded | None:
        assert self._cacheable is not None
        lo, hi = start - _MARGIN, end + _MARGIN
        rows = self._cacheable.readings_ms(person_id, lo, hi, _MAX_CACHED_READINGS + 1)
        if len(rows) > _MAX_CACHED_READINGS:
            return None
        rows.reverse()
        loaded = _Loaded(
            version=int(version),
            start_ms=_ms(lo),
            end_ms=_ms(hi),
            times_ms=[t for t, _ in rows],
            items=[reading_json(r) for _, r in rows],
        )
        if len(self._loaded) >= _MAX_PEOPLE:
            self._loaded.clear()
        self._loaded[person_id] = loaded
        return loaded

    def _direct(self, person_id: str, start: datetime, end: datetime, limit: int) -> bytes:
        readings = (self._cacheable or self._source).readings(person_id, start, end, limit)
        next_end = readings[-1].time if len(readings) == limit else None
        return page_json([reading_json(r) for r in readings], next_end)
