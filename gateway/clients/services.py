"""Typed async clients for the backend services (dosing engine, CGM ingestion, alerts, devices).

Each method is one unary call with the gateway's deadline and metadata; a failed call raises
the mapped gateway error (`gateway.clients.base.map_rpc_error`). The clients translate nothing
else: shapes are the protobuf messages; endpoints turn them into wire shapes.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from langerhans.alerts.v1 import alerts_service_pb2 as alerts_pb
from langerhans.alerts.v1 import alerts_service_pb2_grpc as alerts_grpc
from langerhans.cgm.v1 import cgm_ingestion_service_pb2 as cgm_pb
from langerhans.cgm.v1 import cgm_ingestion_service_pb2_grpc as cgm_grpc
from langerhans.cgm.v1 import cgm_pb2
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_gateway_service_pb2 as device_pb
from langerhans.device.v1 import device_gateway_service_pb2_grpc as device_grpc
from langerhans.dosing.v1 import dosing_engine_service_pb2 as dosing_pb
from langerhans.dosing.v1 import dosing_engine_service_pb2_grpc as dosing_grpc

from gateway.clients.base import ServiceChannels, map_rpc_error
from gateway.errors import ServiceUnavailable

__all__ = ["ServiceClients", "timestamp"]

R = TypeVar("R")
MAX_PAGES = 20
PAGE_SIZE = 1000  # the glucose service's largest page
READING_INTERVAL = timedelta(minutes=5)  # the usual CGM rate, to size the first window
MAX_WINDOWS = 12


def timestamp(value: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


class ServiceClients:
    """All backend calls the gateway makes; `request_id` is the HTTP request's id."""

    def __init__(self, channels: ServiceChannels) -> None:
        self.channels = channels

    async def _call(
        self,
        service: str,
        method: Any,
        request: Any,
        request_id: str | None,
        response_type: type[R],
    ) -> R:
        try:
            return cast(
                R,
                await method(
                    request,
                    timeout=self.channels.deadline_s,
                    metadata=self.channels.metadata(request_id),
                ),
            )
        except grpc.RpcError as exc:
            raise map_rpc_error(service, exc) from None

    # ------------------------------------------------------------------ dosing engine
    def _dosing(self) -> dosing_grpc.DosingEngineServiceStub:
        return dosing_grpc.DosingEngineServiceStub(self.channels.channel("dosing-engine"))

    async def calculate_bolus(
        self, request: dosing_pb.CalculateBolusRequest, request_id: str | None
    ) -> dosing_pb.CalculateBolusResponse:
        return await self._call(
            "dosing-engine",
            self._dosing().CalculateBolus,
            request,
            request_id,
            dosing_pb.CalculateBolusResponse,
        )

    async def issue_manual_command(
        self, request: dosing_pb.IssueManualCommandRequest, request_id: str | None
    ) -> dosing_pb.IssueManualCommandResponse:
        return await self._call(
            "dosing-engine",
            self._dosing().IssueManualCommand,
            request,
            request_id,
            dosing_pb.IssueManualCommandResponse,
        )

    async def get_forecast(
        self, patient_id: str, request_id: str | None
    ) -> dosing_pb.GetForecastResponse:
        request = dosing_pb.GetForecastRequest(patient_id=patient_id)
        return await self._call(
            "dosing-engine",
            self._dosing().GetForecast,
            request,
            request_id,
            dosing_pb.GetForecastResponse,
        )

    async def get_loop_status(
        self, patient_id: str, request_id: str | None
    ) -> dosing_pb.GetLoopStatusResponse:
        request = dosing_pb.GetLoopStatusRequest(patient_id=patient_id)
        return await self._call(
            "dosing-engine",
            self._dosing().GetLoopStatus,
            request,
            request_id,
            dosing_pb.GetLoopStatusResponse,
        )

    # ------------------------------------------------------------------ device gateway
    async def get_device_status(
        self, patient_id: str, request_id: str | None
    ) -> device_pb.GetLoopStatusResponse | None:
        """The hub/pump/CGM side of loop status; None when no device gateway is configured."""
        if not self.channels.configured("device-gateway"):
            return None
        stub = device_grpc.DeviceGatewayServiceStub(self.channels.channel("device-gateway"))
        request = device_pb.GetLoopStatusRequest(patient_id=patient_id)
        return await self._call(
            "device-gateway",
            stub.GetLoopStatus,
            request,
            request_id,
            device_pb.GetLoopStatusResponse,
        )

    # ------------------------------------------------------------------ CGM ingestion
    def _cgm(self) -> cgm_grpc.CgmIngestionServiceStub:
        return cgm_grpc.CgmIngestionServiceStub(self.channels.channel("cgm-ingestion"))

    async def list_readings(
        self, patient_id: str, start: datetime, end: datetime, limit: int, request_id: str | None
    ) -> list[cgm_pb2.CgmReading]:
        """Readings with start <= measured_at < end, newest first, at most `limit`.

        The service lists a range oldest first, so taking its first `limit` readings would give
        the OLDEST ones whenever the range holds more (a 1-minute CGM, a long range). Ask for
        the newest part of the range instead: a window sized for `limit` readings at the usual
        5-minute rate, widened until it holds `limit` readings or reaches `start`, narrowed when
        it holds more than the page budget.
        """
        window = READING_INTERVAL * (limit + 1)
        for _ in range(MAX_WINDOWS):
            low = max(start, end - window)
            got = await self._readings_between(patient_id, low, end, request_id)
            if got is None:  # more than the page budget in this window: its newer half
                window /= 2
                continue
            if len(got) >= limit or low <= start:
                got.sort(key=lambda r: r.measured_at.ToNanoseconds(), reverse=True)
                return got[:limit]
            window *= 4
        raise ServiceUnavailable("the glucose service listed too many readings; narrow the range")

    async def _readings_between(
        self, patient_id: str, start: datetime, end: datetime, request_id: str | None
    ) -> list[cgm_pb2.CgmReading] | None:
        """Every reading in [start, end), or None when that takes more than MAX_PAGES pages."""
        out: list[cgm_pb2.CgmReading] = []
        token = ""
        for _ in range(MAX_PAGES):
            request = cgm_pb.ListReadingsRequest(
                patient_id=patient_id,
                range=common_pb2.TimeRange(start_time=timestamp(start), end_time=timestamp(end)),
                page_size=PAGE_SIZE,
                page_token=token,
            )
            page = await self._call(
                "cgm-ingestion",
                self._cgm().ListReadings,
                request,
                request_id,
                cgm_pb.ListReadingsResponse,
            )
            out.extend(page.readings)
            token = page.next_page_token
            if not token:
                return out
        return None

    async def ingest_readings(
        self, readings: list[cgm_pb2.RawCgmReading], request_id: str | None
    ) -> cgm_pb.IngestReadingsResponse:
        request = cgm_pb.IngestReadingsRequest(readings=readings)
        return await self._call(
            "cgm-ingestion",
            self._cgm().IngestReadings,
            request,
            request_id,
            cgm_pb.IngestReadingsResponse,
        )

    # ------------------------------------------------------------------ alerts
    def _alerts(self) -> alerts_grpc.AlertsServiceStub:
        return alerts_grpc.AlertsServiceStub(self.channels.channel("alerts"))

    async def list_alerts(
        self, request: alerts_pb.ListAlertsRequest, request_id: str | None
    ) -> alerts_pb.ListAlertsResponse:
        return await self._call(
            "alerts", self._alerts().ListAlerts, request, request_id, alerts_pb.ListAlertsResponse
        )

    async def get_alert(self, alert_id: str, request_id: str | None) -> alerts_pb.GetAlertResponse:
        request = alerts_pb.GetAlertRequest(alert_id=alert_id)
        return await self._call(
            "alerts", self._alerts().GetAlert, request, request_id, alerts_pb.GetAlertResponse
        )

    async def acknowledge_alert(
        self, alert_id: str, by: str, note: str, request_id: str | None
    ) -> alerts_pb.AcknowledgeAlertResponse:
        request = alerts_pb.AcknowledgeAlertRequest(
            alert_id=alert_id, acknowledged_by=by, note=note
        )
        return await self._call(
            "alerts",
            self._alerts().AcknowledgeAlert,
            request,
            request_id,
            alerts_pb.AcknowledgeAlertResponse,
        )

    async def snooze_alert(
        self, alert_id: str, by: str, duration_min: int, request_id: str | None
    ) -> alerts_pb.SnoozeAlertResponse:
        request = alerts_pb.SnoozeAlertRequest(
            alert_id=alert_id, snoozed_by=by, duration_min=duration_min
        )
        return await self._call(
            "alerts", self._alerts().SnoozeAlert, request, request_id, alerts_pb.SnoozeAlertResponse
        )
