"""Where the gateway reads glucose from, behind one small interface.

For now readings come from what Nightscout uploaders (xDrip+, AndroidAPS, Loop) sent to the
gateway's Nightscout API. The cgm-ingestion gRPC client replaces `NightscoutEntriesSource`
without any endpoint changing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from gateway.models import NsEntry

__all__ = ["GlucoseReading", "GlucoseSource", "NightscoutEntriesSource"]


@dataclass(frozen=True)
class GlucoseReading:
    record_id: str
    time: datetime
    glucose_mg_dl: int
    trend: str | None  # Nightscout direction name (Flat, SingleUp, ...)
    trend_rate_mg_dl_per_min: float | None
    device: str | None


class GlucoseSource(Protocol):
    def readings(
        self, person_id: str, start: datetime, end: datetime, limit: int
    ) -> Sequence[GlucoseReading]:
        """Readings with start <= time < end, newest first, at most `limit`."""
        ...


class NightscoutEntriesSource:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def readings(
        self, person_id: str, start: datetime, end: datetime, limit: int
    ) -> Sequence[GlucoseReading]:
        return [reading for _, reading in self.readings_ms(person_id, start, end, limit)]

    def readings_ms(
        self, person_id: str, start: datetime, end: datetime, limit: int
    ) -> list[tuple[int, GlucoseReading]]:
        """As `readings`, each with its stored time in epoch milliseconds (exact, for paging)."""
        start_ms = int(start.timestamp() * 1000)
        end_ms = int(end.timestamp() * 1000)
        with self._session_factory() as session:
            # Only the document's `delta`, extracted by the database: decoding every whole
            # uploaded document costs more than the rest of the query.
            rows = session.execute(
                select(NsEntry.id, NsEntry.date_ms, NsEntry.sgv, NsEntry.direction,
                       NsEntry.device, NsEntry.doc["delta"])
                .where(
                    NsEntry.person_id == person_id,
                    NsEntry.type == "sgv",
                    NsEntry.date_ms >= start_ms,
                    NsEntry.date_ms < end_ms,
                    NsEntry.sgv.is_not(None),
                )
                .order_by(NsEntry.date_ms.desc())
                .limit(limit)
            ).all()  # fmt: skip
            session.rollback()
        out: list[tuple[int, GlucoseReading]] = []
        for record_id, date_ms, sgv, direction, device, delta in rows:
            assert sgv is not None
            rate = float(delta) / 5.0 if isinstance(delta, int | float) else None
            reading = GlucoseReading(
                record_id=record_id,
                time=datetime.fromtimestamp(date_ms / 1000, tz=UTC),
                glucose_mg_dl=sgv,
                trend=direction,
                trend_rate_mg_dl_per_min=rate,
                device=device,
            )
            out.append((date_ms, reading))
        return out
