"""CgmIngestionService over gRPC: translates requests to repository/service calls and back."""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC
from typing import Any

import grpc
from langerhans.cgm.v1 import cgm_ingestion_service_pb2 as pb
from langerhans.cgm.v1 import cgm_ingestion_service_pb2_grpc as pb_grpc
from langerhans.cgm.v1 import cgm_pb2
from sqlalchemy.orm import Session, sessionmaker

from services.cgm_ingestion.events import (
    _REASONS,
    publish_outcome,
    raw_from_proto,
    reading_to_proto,
)
from services.cgm_ingestion.repository import ReadingRepository, cursor_of
from services.cgm_ingestion.service import IngestionService
from services.runtime.clock import Clock
from services.runtime.db import session_scope
from services.runtime.errors import FieldViolation, InvalidArgument, NotFound

Ctx = grpc.aio.ServicerContext[Any, Any]

__all__ = ["MAX_PAGE_SIZE", "CgmIngestionServicer"]

MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 288  # one day of 5-minute readings


def _decode_token(token: str) -> tuple[int, str] | None:
    if not token:
        return None
    try:
        t_us, identity = base64.urlsafe_b64decode(token.encode()).decode().split("|", 1)
        return int(t_us), identity
    except ValueError as exc:
        raise InvalidArgument(
            "page_token is not valid", [FieldViolation("page_token", "not a token we issued")]
        ) from exc


def _encode_token(cursor: tuple[int, str]) -> str:
    return base64.urlsafe_b64encode(f"{cursor[0]}|{cursor[1]}".encode()).decode()


class CgmIngestionServicer(pb_grpc.CgmIngestionServiceServicer):
    def __init__(self, sessions: sessionmaker[Session], clock: Clock, night_time_zone: str) -> None:
        self._sessions = sessions
        self._clock = clock
        self._zone = night_time_zone

    async def ListReadings(  # noqa: N802 (gRPC method name)
        self, request: pb.ListReadingsRequest, context: Ctx
    ) -> pb.ListReadingsResponse:
        if not request.patient_id:
            raise InvalidArgument("patient_id is required", [FieldViolation("patient_id", "empty")])
        size = request.page_size or DEFAULT_PAGE_SIZE
        if size > MAX_PAGE_SIZE:
            raise InvalidArgument(
                f"page_size must be ≤ {MAX_PAGE_SIZE}",
                [FieldViolation("page_size", f"at most {MAX_PAGE_SIZE}")],
            )
        after = _decode_token(request.page_token)
        start = (
            request.range.start_time.ToDatetime(UTC)
            if request.range.HasField("start_time")
            else None
        )
        end = request.range.end_time.ToDatetime(UTC) if request.range.HasField("end_time") else None

        def query() -> pb.ListReadingsResponse:
            with self._sessions() as session:
                rows = ReadingRepository(session).page(
                    request.patient_id, start, end, after, size + 1
                )
            response = pb.ListReadingsResponse(readings=[reading_to_proto(r) for r in rows[:size]])
            if len(rows) > size:
                response.next_page_token = _encode_token(cursor_of(rows[size - 1]))
            return response

        return await asyncio.to_thread(query)

    async def GetLatestReading(  # noqa: N802 (gRPC method name)
        self, request: pb.GetLatestReadingRequest, context: Ctx
    ) -> pb.GetLatestReadingResponse:
        if not request.patient_id:
            raise InvalidArgument("patient_id is required", [FieldViolation("patient_id", "empty")])

        def query() -> pb.GetLatestReadingResponse:
            with self._sessions() as session:
                reading = ReadingRepository(session).latest(request.patient_id)
            if reading is None:
                raise NotFound(f"no readings for patient {request.patient_id}")
            return pb.GetLatestReadingResponse(reading=reading_to_proto(reading))

        return await asyncio.to_thread(query)

    async def IngestReadings(  # noqa: N802 (gRPC method name)
        self, request: pb.IngestReadingsRequest, context: Ctx
    ) -> pb.IngestReadingsResponse:
        def ingest() -> pb.IngestReadingsResponse:
            response = pb.IngestReadingsResponse()
            with session_scope(self._sessions) as session:
                service = IngestionService(ReadingRepository(session), self._clock, self._zone)
                for message in request.readings:
                    outcome = service.ingest(raw_from_proto(message))
                    if outcome.rejection is not None:
                        response.rejected.append(
                            cgm_pb2.ReadingRejected(
                                raw=message,
                                reason=_REASONS[outcome.rejection.reason],
                                detail=outcome.rejection.detail,
                            )
                        )
                    elif outcome.duplicate:
                        response.duplicates += 1
                    else:
                        response.accepted += 1
                    publish_outcome(session, outcome, self._clock, message)
            return response

        return await asyncio.to_thread(ingest)
