"""DosingEngineService over gRPC: translates requests to the engine and back."""

from __future__ import annotations

import asyncio
import math
from typing import Any, Final

import grpc
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_engine_service_pb2 as pb
from langerhans.dosing.v1 import dosing_engine_service_pb2_grpc as pb_grpc
from langerhans.dosing.v1 import dosing_pb2
from sqlalchemy.orm import Session, sessionmaker

from kernels.bolus import BolusWarning, bolus_advice
from kernels.decision import decide
from kernels.increase_margin import (
    DEFAULT_INCREASE_MARGIN_IOB_FRACTION,
    check_iob_fraction,
    decide_with_margin,
)
from services.dosing_engine.events import COMMANDS_TOPIC, SOURCE
from services.dosing_engine.model import (
    STALE_AFTER_S,
    decision_input,
    decision_to_proto,
    kernel_settings,
    to_timestamp,
    ts_seconds,
)
from services.dosing_engine.repository import Repository
from services.dosing_engine.service import DosingEngine
from services.runtime import outbox
from services.runtime.clock import Clock
from services.runtime.command_signing import CommandSigner
from services.runtime.errors import FailedPrecondition, FieldViolation, InvalidArgument, NotFound

__all__ = ["CONFIRMATION_LIFETIME_S", "DosingEngineServicer"]

Ctx = grpc.aio.ServicerContext[Any, Any]
CONFIRMATION_LIFETIME_S: Final = 5 * 60.0
LOOPING_WITHIN_S: Final = 15 * 60.0
W = pb
_BOLUS_WARNINGS: Final = {
    BolusWarning.LOW_GLUCOSE: W.BOLUS_WARNING_CODE_LOW_GLUCOSE,
    BolusWarning.CAPPED: W.BOLUS_WARNING_CODE_MAX_BOLUS,
    BolusWarning.SETTING_CLAMPED: W.BOLUS_WARNING_CODE_MAX_BOLUS,
}


def _need(value: str, field: str) -> None:
    if not value:
        raise InvalidArgument(f"{field} is required", [FieldViolation(field, "empty")])


class DosingEngineServicer(pb_grpc.DosingEngineServiceServicer):
    def __init__(
        self,
        sessions: sessionmaker[Session],
        clock: Clock,
        signer: CommandSigner,
        *,
        commands_topic: str = COMMANDS_TOPIC,
        increase_margin_iob_fraction: float = DEFAULT_INCREASE_MARGIN_IOB_FRACTION,
    ) -> None:
        self._sessions = sessions
        # Decide answers what the live engine would do: the same margin for increases
        self._margin = check_iob_fraction(increase_margin_iob_fraction)
        self._clock = clock
        self._signer = signer
        # manual commands go where the consumer's automatic ones go (settings override)
        self._commands_topic = commands_topic

    async def Decide(self, request: pb.DecideRequest, context: Ctx) -> pb.DecideResponse:  # noqa: N802
        def work() -> pb.DecideResponse:
            decision = decide_with_margin(decision_input(request), self._margin)
            return pb.DecideResponse(decision=decision_to_proto(decision, request))

        return await asyncio.to_thread(work)

    def _state(self, session: Session, patient_id: str) -> pb.DecideRequest:
        engine = DosingEngine(
            Repository(session),
            self._clock,
            self._signer,
            increase_margin_iob_fraction=self._margin,
        )
        req = engine.state_request(patient_id, self._clock.now().timestamp())
        if req is None:
            raise NotFound(f"no therapy settings for patient {patient_id}")
        return req

    async def GetForecast(  # noqa: N802
        self, request: pb.GetForecastRequest, context: Ctx
    ) -> pb.GetForecastResponse:
        _need(request.patient_id, "patient_id")

        def work() -> pb.GetForecastResponse:
            with self._sessions() as session:
                req = self._state(session, request.patient_id)
            if not req.cgm_history:
                return pb.GetForecastResponse()
            msg = decision_to_proto(decide(decision_input(req)), req)
            return pb.GetForecastResponse(
                forecast=msg.forecast, iob_u=msg.iob_u, cob_g=msg.cob_g, reading_id=msg.reading_id
            )

        return await asyncio.to_thread(work)

    async def CalculateBolus(  # noqa: N802
        self, request: pb.CalculateBolusRequest, context: Ctx
    ) -> pb.CalculateBolusResponse:
        _need(request.patient_id, "patient_id")
        if not (math.isfinite(request.carbs_g) and 0.0 <= request.carbs_g <= 250.0):
            raise InvalidArgument("carbs must be 0–250 g", [FieldViolation("carbs_g", "0–250")])

        def work() -> pb.CalculateBolusResponse:
            with self._sessions() as session:
                req = self._state(session, request.patient_id)
            now_s = ts_seconds(req.now)
            settings = kernel_settings(req.settings, now_s)
            decision = decide(decision_input(req))
            resp = pb.CalculateBolusResponse(
                settings_version=req.settings.version, cob_g=decision.cob_g
            )
            resp.calculated_at.CopyFrom(req.now)
            latest = max(req.cgm_history, key=lambda r: ts_seconds(r.measured_at), default=None)
            glucose: float | None = None
            trend = 0.0
            if request.HasField("glucose_mg_dl"):
                glucose = request.glucose_mg_dl
            elif latest is not None and now_s - ts_seconds(latest.measured_at) <= STALE_AFTER_S:
                glucose = latest.glucose_mg_dl
                resp.reading_id = latest.reading_id
                if latest.HasField("rate_mg_dl_per_min"):
                    trend = latest.rate_mg_dl_per_min
            elif latest is not None:
                resp.warnings.add(
                    code=W.BOLUS_WARNING_CODE_STALE_GLUCOSE,
                    message="the latest reading is older than 12 min",
                )
            target = (settings.min_bg_mg_dl + settings.max_bg_mg_dl) / 2
            if glucose is None:
                resp.warnings.add(
                    code=W.BOLUS_WARNING_CODE_NO_GLUCOSE, message="no recent glucose: no correction"
                )
            immediate = 100.0
            extended_min = 0
            if request.kind == common_pb2.BOLUS_KIND_EXTENDED:
                immediate, extended_min = 0.0, request.extended_duration_min
            elif request.kind == common_pb2.BOLUS_KIND_DUAL_WAVE:
                immediate, extended_min = request.immediate_pct, request.extended_duration_min
            try:
                advice = bolus_advice(
                    carbs_g=request.carbs_g,
                    bg_mg_dl=glucose if glucose is not None else target,
                    target_mg_dl=target,
                    isf_mg_dl_per_u=settings.isf_mg_dl_per_u,
                    carb_ratio_g_per_u=settings.carb_ratio_g_per_u,
                    iob_u=decision.iob_u,
                    trend_mg_dl_per_min=trend,
                    increment_u=settings.bolus_increment_u,
                    max_bolus_u=settings.max_bolus_u,
                    age_group=settings.age_group,
                    immediate_pct=immediate,
                    extended_duration_min=float(extended_min),
                )
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from exc
            resp.recommended_insulin_u = advice.total_u
            resp.immediate_insulin_u = advice.immediate_u
            resp.extended_insulin_u = advice.extended_u
            resp.extended_duration_min = int(advice.extended_duration_min)
            resp.glucose_mg_dl = glucose or 0.0
            b = resp.breakdown
            b.carb_insulin_u, b.correction_insulin_u = advice.carb_u, advice.correction_u
            b.iob_u, b.target_mg_dl = advice.iob_u, target
            b.carb_ratio_g_per_u = settings.carb_ratio_g_per_u
            b.isf_mg_dl_per_u = settings.isf_mg_dl_per_u
            b.unlimited_insulin_u = (
                advice.carb_u + advice.correction_u + advice.trend_u - max(advice.iob_u, 0.0)
            )
            for flag, code in _BOLUS_WARNINGS.items():
                if advice.warnings & flag:
                    resp.warnings.add(code=code, message=str(flag.name).lower().replace("_", " "))
            if decision.min_guard_bg_mg_dl < decision.threshold_mg_dl:
                resp.warnings.add(
                    code=W.BOLUS_WARNING_CODE_FORECAST_LOW,
                    message="the forecast goes below the suspend threshold",
                )
            if req.pump_state.bolus_in_progress:
                resp.warnings.add(
                    code=W.BOLUS_WARNING_CODE_BOLUS_IN_PROGRESS,
                    message="a bolus is still being delivered",
                )
            if req.pump_state.uncertain_command_ids:
                resp.warnings.add(
                    code=W.BOLUS_WARNING_CODE_DELIVERY_UNCERTAIN,
                    message="a dose is unconfirmed: IOB may be underestimated",
                )
            return resp

        return await asyncio.to_thread(work)

    async def IssueManualCommand(  # noqa: N802
        self, request: pb.IssueManualCommandRequest, context: Ctx
    ) -> pb.IssueManualCommandResponse:
        _need(request.request_id, "request_id")
        _need(request.patient_id, "patient_id")
        _need(request.requested_by, "requested_by")
        if request.origin not in (
            device_pb2.PUMP_COMMAND_ORIGIN_MANUAL,
            device_pb2.PUMP_COMMAND_ORIGIN_REMOTE,
        ):
            raise InvalidArgument(
                "origin must be MANUAL or REMOTE", [FieldViolation("origin", "MANUAL or REMOTE")]
            )
        action = request.WhichOneof("action")
        if action is None:
            raise InvalidArgument("an action is required", [FieldViolation("action", "unset")])

        def work() -> pb.IssueManualCommandResponse:
            with self._sessions() as session, session.begin():
                repo = Repository(session)
                key = f"manual:{request.patient_id}:{request.request_id}"
                existing = repo.command_by_key(key)
                if existing is not None:  # a retry: the first result, nothing new
                    signed = device_pb2.SignedPumpCommand.FromString(existing.signed)
                    return pb.IssueManualCommandResponse(
                        command_id=existing.command_id,
                        signed_command=signed,
                        state=existing.state,  # type: ignore[arg-type]
                    )
                req = self._state(session, request.patient_id)
                now_s = ts_seconds(req.now)
                st = repo.pump_state(request.patient_id)
                if not st.device_id:
                    raise FailedPrecondition("no pump hub is known for this person")
                settings = kernel_settings(req.settings, now_s)
                warnings: list[pb.BolusWarning] = []
                cmd = device_pb2.PumpCommand()
                if action == "deliver_bolus":
                    b = request.deliver_bolus
                    if not request.HasField("calculated_at"):
                        raise InvalidArgument(
                            "calculated_at of the confirmed calculation is required"
                        )
                    age = now_s - ts_seconds(request.calculated_at)
                    if not 0.0 <= age <= CONFIRMATION_LIFETIME_S:
                        raise FailedPrecondition("the bolus confirmation is older than 5 min")
                    from kernels._layout import AGE_GROUPS, HARD_MAX_BOLUS_U

                    limit = min(
                        settings.max_bolus_u,
                        30.0,
                        HARD_MAX_BOLUS_U[AGE_GROUPS.index(settings.age_group)],
                    )
                    if not (math.isfinite(b.insulin_u) and 0.0 < b.insulin_u <= limit + 1e-9):
                        raise InvalidArgument(
                            f"bolus must be > 0 and ≤ {limit:g} U",
                            [FieldViolation("deliver_bolus.insulin_u", f"0–{limit:g} U")],
                        )
                    if b.automatic:
                        raise InvalidArgument("a manual bolus cannot be marked automatic")
                    if req.pump_state.uncertain_command_ids:
                        raise FailedPrecondition("a dose is unconfirmed: wait for pump history")
                    if req.pump_state.bolus_in_progress:
                        warnings.append(
                            pb.BolusWarning(
                                code=W.BOLUS_WARNING_CODE_BOLUS_IN_PROGRESS,
                                message="a bolus is still being delivered",
                            )
                        )
                    cmd.deliver_bolus.CopyFrom(b)
                elif action == "set_temp_basal":
                    t = request.set_temp_basal
                    if not (
                        0.0 <= t.rate_u_per_h <= settings.max_basal_u_per_h
                        and 30 <= t.duration_min <= 1440
                    ):
                        raise InvalidArgument("temp basal must be 0–max basal for 30–1440 min")
                    cmd.set_temp_basal.CopyFrom(t)
                else:
                    getattr(cmd, action).CopyFrom(getattr(request, action))
                engine = DosingEngine(
                    repo, self._clock, self._signer, increase_margin_iob_fraction=self._margin
                )
                signed = engine.issue(
                    cmd,
                    key,
                    action,
                    msg=None,
                    device_id=st.device_id,
                    now_s=now_s,
                    origin=request.origin,
                    issued_by=request.requested_by,
                    patient_id=request.patient_id,
                )
                outbox.add(
                    session,
                    self._commands_topic,
                    request.patient_id,
                    signed,
                    source=SOURCE,
                    clock=self._clock,
                    event_id=cmd.command_id,
                )
                return pb.IssueManualCommandResponse(
                    command_id=cmd.command_id,
                    signed_command=signed,
                    state=device_pb2.PUMP_COMMAND_STATE_QUEUED,
                    warnings=warnings,
                )

        return await asyncio.to_thread(work)

    async def GetLoopStatus(  # noqa: N802
        self, request: pb.GetLoopStatusRequest, context: Ctx
    ) -> pb.GetLoopStatusResponse:
        _need(request.patient_id, "patient_id")
        c = common_pb2

        def work() -> pb.GetLoopStatusResponse:
            now_s = self._clock.now().timestamp()
            with self._sessions() as session:
                repo = Repository(session)
                stored = repo.settings(request.patient_id)
                last = repo.last_decision(request.patient_id)
                enacted = repo.last_decision(request.patient_id, enacted_only=True)
                st = repo.pump_state(request.patient_id)
                newest = repo.newest_reading_s(request.patient_id)
            resp = pb.GetLoopStatusResponse()
            reasons: list[common_pb2.LoopStatusReason.ValueType] = []
            if stored is None:
                reasons.append(c.LOOP_STATUS_REASON_NO_SETTINGS)
            else:
                from langerhans.common.v1 import therapy_pb2

                settings = therapy_pb2.TherapySettings.FromString(stored[1])
                resp.mode = settings.loop_mode
                if settings.loop_mode in (c.LOOP_MODE_OPEN_LOOP, c.LOOP_MODE_UNSPECIFIED):
                    reasons.append(c.LOOP_STATUS_REASON_OPEN_LOOP)
            if not st.device_id:
                reasons.append(c.LOOP_STATUS_REASON_NO_DEVICE)
            if st.uncertain:
                reasons.append(c.LOOP_STATUS_REASON_DELIVERY_UNCERTAIN)
            if st.suspended:
                reasons.append(c.LOOP_STATUS_REASON_PUMP_SUSPENDED)
            if newest is None or now_s - newest > STALE_AFTER_S:
                reasons.append(c.LOOP_STATUS_REASON_CGM_UNUSABLE)
            if last is not None:
                resp.last_decision.ParseFromString(last[1])
            if enacted is not None:
                resp.last_enacted_at.CopyFrom(to_timestamp(enacted[0]))
            resp.looping = enacted is not None and now_s - enacted[0] <= LOOPING_WITHIN_S
            if not reasons and not resp.looping:
                reasons.append(c.LOOP_STATUS_REASON_CLOUD)
            resp.reasons.extend(reasons or [c.LOOP_STATUS_REASON_OK])
            resp.summary = (
                "looping"
                if resp.looping
                else "not looping: " + ", ".join(c.LoopStatusReason.Name(r) for r in reasons)
            )
            return resp

        return await asyncio.to_thread(work)


_ = dosing_pb2  # the decision message type travels inside the responses
