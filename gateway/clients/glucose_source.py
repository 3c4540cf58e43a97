"""`GlucoseSource` backed by the cgm-ingestion service (validated readings from every source).

The glucose endpoints are sync; they run on a worker thread, and the gRPC call runs on the
app's event loop through `run_sync`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from langerhans.cgm.v1 import cgm_pb2

from gateway.clients.base import run_sync
from gateway.clients.convert import NIGHTSCOUT_DIRECTION, to_time
from gateway.clients.services import ServiceClients
from gateway.glucose.source import GlucoseReading
from services.runtime.logging import current_request_id

__all__ = ["CgmServiceSource", "reading_from_proto"]


def reading_from_proto(reading: cgm_pb2.CgmReading) -> GlucoseReading:
    return GlucoseReading(
        record_id=reading.reading_id,
        time=to_time(reading.measured_at),
        glucose_mg_dl=round(reading.glucose_mg_dl),
        trend=NIGHTSCOUT_DIRECTION.get(reading.trend),
        trend_rate_mg_dl_per_min=(
            reading.rate_mg_dl_per_min if reading.HasField("rate_mg_dl_per_min") else None
        ),
        device=reading.device_id or None,
    )


class CgmServiceSource:
    def __init__(self, clients: ServiceClients) -> None:
        self._clients = clients

    def readings(
        self, person_id: str, start: datetime, end: datetime, limit: int
    ) -> Sequence[GlucoseReading]:
        rows = run_sync(
            self._clients.list_readings, person_id, start, end, limit, current_request_id()
        )
        return [reading_from_proto(r) for r in rows]
