"""In-process fake backend services on a real gRPC socket (127.0.0.1), for handler unit tests.

The fakes follow the proto contracts with the simplest honest behaviour: the bolus calculator
is carbs/CR + (glucose − target)/ISF, IssueManualCommand is idempotent on request_id and
refuses a confirmation older than 5 min. They run on their own event loop in a thread.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import grpc
from langerhans.alerts.v1 import alerts_pb2
from langerhans.alerts.v1 import alerts_service_pb2 as alerts_pb
from langerhans.alerts.v1 import alerts_service_pb2_grpc as alerts_grpc
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_engine_service_pb2 as pb
from langerhans.dosing.v1 import dosing_engine_service_pb2_grpc as pb_grpc
from langerhans.dosing.v1 import dosing_pb2

from gateway.clients.services import timestamp
from services.runtime.clock import Clock
from services.runtime.grpc_server import build_server, servicer
from services.runtime.settings import ServiceSettings

Ctx = grpc.aio.ServicerContext[Any, Any]
CR_G_PER_U = 10.0
ISF = 45.0
TARGET = 110.0


class FakeDosingEngine(pb_grpc.DosingEngineServiceServicer):
    async def Decide(self, request: Any, context: Ctx) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.issued: dict[str, pb.IssueManualCommandResponse] = {}
        self.issue_calls: Counter[str] = Counter()
        self.request_ids_seen: list[str] = []
        self.delay_s = 0.0

    async def CalculateBolus(self, request: pb.CalculateBolusRequest, context: Ctx) -> Any:
        self.request_ids_seen.append(
            dict(context.invocation_metadata() or ()).get("x-request-id", "")
        )
        glucose = request.glucose_mg_dl if request.HasField("glucose_mg_dl") else 150.0
        carb_u = request.carbs_g / CR_G_PER_U
        corr_u = (glucose - TARGET) / ISF
        total = max(0.0, round(carb_u + corr_u, 2))
        warnings = []
        if glucose < 70:
            total = 0.0
            warnings.append(
                pb.BolusWarning(code=pb.BOLUS_WARNING_CODE_LOW_GLUCOSE, message="treat the low")
            )
        now_pct = 100.0 if request.kind == common_pb2.BOLUS_KIND_STANDARD else request.immediate_pct
        return pb.CalculateBolusResponse(
            recommended_insulin_u=total,
            immediate_insulin_u=round(total * now_pct / 100, 2),
            extended_insulin_u=round(total * (100 - now_pct) / 100, 2),
            extended_duration_min=request.extended_duration_min,
            breakdown=pb.BolusBreakdown(
                carb_insulin_u=carb_u,
                correction_insulin_u=corr_u,
                carb_ratio_g_per_u=CR_G_PER_U,
                isf_mg_dl_per_u=ISF,
                target_mg_dl=TARGET,
                unlimited_insulin_u=carb_u + corr_u,
            ),
            warnings=warnings,
            glucose_mg_dl=glucose,
            settings_version=3,
            calculated_at=timestamp(self.clock.now()),
        )

    async def IssueManualCommand(self, request: pb.IssueManualCommandRequest, context: Ctx) -> Any:
        self.issue_calls[request.request_id] += 1
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.request_id in self.issued:
            return self.issued[request.request_id]
        if self.clock.now() - request.calculated_at.ToDatetime(
            tzinfo=self.clock.now().tzinfo
        ) > timedelta(minutes=5):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "confirmation too late")
        if request.deliver_bolus.insulin_u > 10:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "above max bolus 10 U")
        answer = pb.IssueManualCommandResponse(
            command_id=f"cmd-{len(self.issued) + 1}",
            state=device_pb2.PUMP_COMMAND_STATE_QUEUED,
        )
        self.issued[request.request_id] = answer
        return answer

    async def GetForecast(self, request: pb.GetForecastRequest, context: Ctx) -> Any:
        return pb.GetForecastResponse(
            forecast=dosing_pb2.Forecast(
                lines=[
                    dosing_pb2.ForecastLine(
                        kind=dosing_pb2.FORECAST_KIND_COMBINED,
                        start_time=timestamp(self.clock.now()),
                        interval_min=5,
                        glucose_mg_dl=[150, 145, 140],
                    )
                ],
                eventual_glucose_mg_dl=120,
                min_predicted_glucose_mg_dl=118,
                min_predicted_at=timestamp(self.clock.now() + timedelta(hours=2)),
            ),
            iob_u=1.5,
            cob_g=20,
            reading_id="r-1",
        )

    async def GetLoopStatus(self, request: pb.GetLoopStatusRequest, context: Ctx) -> Any:
        return pb.GetLoopStatusResponse(
            reasons=[common_pb2.LOOP_STATUS_REASON_OK],
            looping=True,
            mode=common_pb2.LOOP_MODE_CLOSED_LOOP_TEMP_BASAL,
            last_decision=dosing_pb2.DosingDecision(
                decision_id="d-1",
                patient_id=request.patient_id,
                iob_u=1.5,
                cob_g=20,
                decided_at=timestamp(self.clock.now()),
            ),
            last_enacted_at=timestamp(self.clock.now()),
            summary="looping",
        )


class FakeAlerts(alerts_grpc.AlertsServiceServicer):
    async def GetAlertRules(self, request: Any, context: Ctx) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")

    async def UpdateAlertRules(self, request: Any, context: Ctx) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")

    async def GetEscalationPolicy(self, request: Any, context: Ctx) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")

    async def SetEscalationPolicy(self, request: Any, context: Ctx) -> Any:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not faked")

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.alerts: dict[str, alerts_pb2.Alert] = {}

    def add(
        self,
        alert_id: str,
        patient_id: str,
        kind: alerts_pb2.AlertType.ValueType = alerts_pb2.ALERT_TYPE_LOW,
    ) -> None:
        self.alerts[alert_id] = alerts_pb2.Alert(
            alert_id=alert_id,
            patient_id=patient_id,
            type=kind,
            severity=alerts_pb2.ALERT_SEVERITY_URGENT,
            state=alerts_pb2.ALERT_STATE_NOTIFIED,
            title="Low",
            message="glucose 62 mg/dL",
            glucose_mg_dl=62,
            raised_at=timestamp(self.clock.now()),
        )

    async def ListAlerts(self, request: alerts_pb.ListAlertsRequest, context: Ctx) -> Any:
        found = [a for a in self.alerts.values() if a.patient_id == request.patient_id]
        if request.states:
            found = [a for a in found if a.state in request.states]
        return alerts_pb.ListAlertsResponse(alerts=found)

    async def GetAlert(self, request: alerts_pb.GetAlertRequest, context: Ctx) -> Any:
        if request.alert_id not in self.alerts:
            await context.abort(grpc.StatusCode.NOT_FOUND, "no such alert")
        return alerts_pb.GetAlertResponse(alert=self.alerts[request.alert_id])

    async def AcknowledgeAlert(
        self, request: alerts_pb.AcknowledgeAlertRequest, context: Ctx
    ) -> Any:
        alert = self.alerts[request.alert_id]
        alert.state = alerts_pb2.ALERT_STATE_ACKNOWLEDGED
        alert.acknowledged_by = request.acknowledged_by
        alert.acknowledged_at.CopyFrom(timestamp(self.clock.now()))
        return alerts_pb.AcknowledgeAlertResponse(alert=alert)

    async def SnoozeAlert(self, request: alerts_pb.SnoozeAlertRequest, context: Ctx) -> Any:
        alert = self.alerts[request.alert_id]
        capped = alert.type == alerts_pb2.ALERT_TYPE_URGENT_LOW and request.duration_min > 15
        minutes = 15 if capped else request.duration_min
        alert.state = alerts_pb2.ALERT_STATE_SNOOZED
        alert.snoozed_until.CopyFrom(timestamp(self.clock.now() + timedelta(minutes=minutes)))
        return alerts_pb.SnoozeAlertResponse(alert=alert, capped=capped)


@contextmanager
def serve_fakes(*servicers: Any) -> Iterator[str]:
    """Serve the servicers on 127.0.0.1 (ephemeral port) in a thread; yields host:port."""
    definitions = []
    for s in servicers:
        if isinstance(s, FakeDosingEngine):
            definitions.append(
                servicer(
                    pb.DESCRIPTOR.services_by_name["DosingEngineService"].full_name,
                    pb_grpc.add_DosingEngineServiceServicer_to_server,
                    s,
                )
            )
        elif isinstance(s, FakeAlerts):
            definitions.append(
                servicer(
                    alerts_pb.DESCRIPTOR.services_by_name["AlertsService"].full_name,
                    alerts_grpc.add_AlertsServiceServicer_to_server,
                    s,
                )
            )
        else:
            definitions.append(s)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop: asyncio.Event | None = None
    holder: dict[str, Any] = {}

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        server = build_server(ServiceSettings(environment="test", grpc_port=0), definitions)
        await server.start()
        holder["port"] = server.port
        started.set()
        await stop.wait()
        await server.stop(0)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10), "fake gRPC server did not start"
    try:
        yield f"127.0.0.1:{holder['port']}"
    finally:
        assert stop is not None
        loop.call_soon_threadsafe(stop.set)
        thread.join(10)
        loop.close()
