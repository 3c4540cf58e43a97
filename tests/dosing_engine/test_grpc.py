"""DosingEngineService over a real gRPC socket: Decide equals the Python API for the same input;
bolus calculation, manual commands (limits, 5-min confirmation, idempotency) and loop status."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import grpc
import pytest
from langerhans.common.v1 import common_pb2
from langerhans.device.v1 import device_pb2
from langerhans.dosing.v1 import dosing_engine_service_pb2 as pb
from langerhans.dosing.v1 import dosing_engine_service_pb2_grpc as pb_grpc
from sqlalchemy.orm import Session, sessionmaker

from kernels.decision import decide
from services.dosing_engine.events import COMMANDS_TOPIC, handle
from services.dosing_engine.main import DosingEngineSettings
from services.dosing_engine.model import decision_input, decision_to_proto, to_timestamp
from services.dosing_engine.servicer import DosingEngineServicer
from services.runtime.clock import FixedClock
from services.runtime.command_signing import CommandSigner, TrustedKeys
from services.runtime.grpc_server import build_server, servicer
from services.runtime.kafka.envelope import new_envelope
from services.runtime.outbox import pending_rows
from tests.dosing_engine.conftest import START, rising_history, settings_changed

P = "patient-grpc"


def _state(sessions: sessionmaker[Session], clock: FixedClock, signer: CommandSigner) -> None:
    messages = [settings_changed(P), *rising_history(P, START)]
    for m in messages:
        with sessions() as session, session.begin():
            handle(new_envelope(P, m, source="test", time=clock.now()), session, clock, signer)


async def _with_server(sessions, clock, signer, body, commands_topic=COMMANDS_TOPIC):
    settings = DosingEngineSettings(grpc_host="127.0.0.1", grpc_port=0)
    definition = servicer(
        pb.DESCRIPTOR.services_by_name["DosingEngineService"].full_name,
        pb_grpc.add_DosingEngineServiceServicer_to_server,
        DosingEngineServicer(sessions, clock, signer, commands_topic=commands_topic),
    )
    server = build_server(settings, [definition])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(server.address) as channel:
            return await body(pb_grpc.DosingEngineServiceStub(channel))
    finally:
        await server.stop()


def _request() -> pb.DecideRequest:
    req = pb.DecideRequest(patient_id=P)
    req.now.CopyFrom(to_timestamp(START.timestamp()))
    req.settings.CopyFrom(settings_changed(P).settings)
    req.cgm_history.extend(rising_history(P, START))
    dose = req.doses.add(kind=pb.DOSE_KIND_BOLUS, insulin_u=2.0)
    dose.start_time.CopyFrom(to_timestamp((START - timedelta(hours=2)).timestamp()))
    carbs = req.carbs.add(carbs_g=40.0, absorption_min=180)
    carbs.eaten_at.CopyFrom(to_timestamp((START - timedelta(hours=2)).timestamp()))
    return req


def test_decide_over_the_socket_equals_the_python_api(sessions, clock, signer) -> None:
    req = _request()
    expected = decision_to_proto(decide(decision_input(req)), req)

    async def body(stub: Any) -> pb.DecideResponse:
        response: pb.DecideResponse = await stub.Decide(req)
        return response

    got = asyncio.run(_with_server(sessions, clock, signer, body))
    if got.decision != expected:  # show where they differ
        for f, v in expected.ListFields():
            assert getattr(got.decision, f.name) == v, f.name
    assert got.decision == expected
    assert got.decision.recommendation.WhichOneof("basal") is not None
    assert not got.decision.enacted
    assert not got.decision.command_ids


def test_decide_refuses_out_of_bounds_settings(sessions, clock, signer) -> None:
    req = _request()
    req.settings.sensitivity_schedule[0].isf_mg_dl_per_u = 5000.0

    async def body(stub: Any) -> None:
        await stub.Decide(req)

    with pytest.raises(grpc.aio.AioRpcError) as err:
        asyncio.run(_with_server(sessions, clock, signer, body))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bolus_then_confirmed_manual_bolus(sessions, clock, signer) -> None:
    _state(sessions, clock, signer)

    async def body(stub: Any) -> tuple[object, ...]:
        calc = await stub.CalculateBolus(pb.CalculateBolusRequest(patient_id=P, carbs_g=40.0))
        bolus = device_pb2.DeliverBolus(
            insulin_u=calc.recommended_insulin_u,
            kind=common_pb2.BOLUS_KIND_STANDARD,
            immediate_pct=100,
        )
        issue = pb.IssueManualCommandRequest(
            request_id="req-1", patient_id=P, requested_by="person-1",
            origin=device_pb2.PUMP_COMMAND_ORIGIN_MANUAL, deliver_bolus=bolus,
        )  # fmt: skip
        issue.calculated_at.CopyFrom(calc.calculated_at)
        first = await stub.IssueManualCommand(issue)
        again = await stub.IssueManualCommand(issue)
        too_big = pb.IssueManualCommandRequest()
        too_big.CopyFrom(issue)
        too_big.request_id = "req-2"
        too_big.deliver_bolus.insulin_u = 9.0  # max bolus 8 U
        codes = []
        try:
            await stub.IssueManualCommand(too_big)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
        late = pb.IssueManualCommandRequest()
        late.CopyFrom(issue)
        late.request_id = "req-3"
        late.calculated_at.CopyFrom(to_timestamp((START - timedelta(minutes=6)).timestamp()))
        try:
            await stub.IssueManualCommand(late)
        except grpc.aio.AioRpcError as exc:
            codes.append(exc.code())
        status = await stub.GetLoopStatus(pb.GetLoopStatusRequest(patient_id=P))
        return calc, first, again, codes, status

    calc, first, again, codes, status = asyncio.run(_with_server(sessions, clock, signer, body))
    assert calc.recommended_insulin_u > 0
    assert calc.breakdown.carb_insulin_u == pytest.approx(4.0)
    command = TrustedKeys([signer.public_key]).verify(first.signed_command)
    assert command.deliver_bolus.insulin_u == calc.recommended_insulin_u
    assert command.origin == device_pb2.PUMP_COMMAND_ORIGIN_MANUAL
    assert again.command_id == first.command_id
    assert codes == [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION]
    assert status.looping
    assert status.mode == common_pb2.LOOP_MODE_CLOSED_LOOP_SMB


def test_manual_command_goes_to_the_configured_commands_topic(sessions, clock, signer) -> None:
    _state(sessions, clock, signer)
    topic = "staging.pump.commands.v1"  # LANGERHANS_COMMANDS_TOPIC in a deployment

    async def body(stub: Any) -> Any:
        calc = await stub.CalculateBolus(pb.CalculateBolusRequest(patient_id=P, carbs_g=20.0))
        issue = pb.IssueManualCommandRequest(
            request_id="req-topic", patient_id=P, requested_by="person-1",
            origin=device_pb2.PUMP_COMMAND_ORIGIN_MANUAL,
            deliver_bolus=device_pb2.DeliverBolus(
                insulin_u=calc.recommended_insulin_u, kind=common_pb2.BOLUS_KIND_STANDARD,
                immediate_pct=100,
            ),
        )  # fmt: skip
        issue.calculated_at.CopyFrom(calc.calculated_at)
        return await stub.IssueManualCommand(issue)

    issued = asyncio.run(_with_server(sessions, clock, signer, body, commands_topic=topic))
    with sessions() as session:
        rows = [r for r in pending_rows(session, 1000) if r.envelope.event_id == issued.command_id]
    assert [r.topic for r in rows] == [topic]
