"""The gRPC bootstrap over a real socket: health, reflection, request ids, error mapping,
metrics and the authentication hook. A tiny bytes-in/bytes-out service stands in for a real
one so these tests depend on no other team's protos."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from services.runtime import errors
from services.runtime.grpc_server import GrpcServer, build_server, generic_service
from services.runtime.interceptors import current_principal
from services.runtime.logging import configure_logging
from services.runtime.metrics import start_metrics_server
from services.runtime.security import require_service_token, token_digest
from services.runtime.settings import ServiceSettings

SERVICE = "langerhans.test.v1.Probe"
log = logging.getLogger("tests.probe")

ERRORS: dict[bytes, Exception] = {
    b"not-found": errors.NotFound("patient p-1 not found"),
    b"invalid": errors.InvalidArgument(
        "bolus out of range",
        [errors.FieldViolation("insulin_u", "must be at most 25 U")],
    ),
    b"denied": errors.PermissionDenied("not your patient"),
    b"unauthenticated": errors.Unauthenticated("who are you"),
    b"exists": errors.AlreadyExists("device already enrolled"),
    b"conflict": errors.Conflict("settings changed meanwhile"),
    b"precondition": errors.FailedPrecondition("pump suspended"),
    b"unavailable": errors.Unavailable("CGM feed down"),
    b"exhausted": errors.ResourceExhausted("slow down"),
}


async def echo(request: bytes, context: Any) -> bytes:
    log.info("echo handled", extra={"size_bytes": len(request)})
    return request


async def fail(request: bytes, context: Any) -> bytes:
    if request in ERRORS:
        raise ERRORS[request]
    if request == b"abort":
        await context.abort(grpc.StatusCode.OUT_OF_RANGE, "servicer chose this")
    raise RuntimeError("connection to postgresql://admin:hunter2@db failed")


async def countdown(request: bytes, context: Any) -> AsyncIterator[bytes]:
    for i in range(int(request)):
        yield str(i).encode()
    raise errors.Unavailable("stream source went away")


async def whoami(request: bytes, context: Any) -> bytes:
    principal = current_principal()
    return principal.name.encode() if principal else b"anonymous"


def _identity(data: bytes) -> bytes:
    return data


def probe_service() -> Any:
    def unary(fn: Any) -> grpc.RpcMethodHandler[Any, Any]:
        return grpc.unary_unary_rpc_method_handler(fn, _identity, _identity)

    return generic_service(
        SERVICE,
        {
            "Echo": unary(echo),
            "Fail": unary(fail),
            "WhoAmI": unary(whoami),
            "Countdown": grpc.unary_stream_rpc_method_handler(countdown, _identity, _identity),
        },
    )


def trailers(metadata: Any) -> dict[str, Any]:
    return dict(metadata or ())


def call(channel: aio.Channel, method: str) -> Any:
    return channel.unary_unary(f"/{SERVICE}/{method}", _identity, _identity)


@pytest.fixture
async def server() -> AsyncIterator[GrpcServer]:
    srv = build_server(ServiceSettings(service_name="probe"), [probe_service()])
    await srv.start()
    yield srv
    await srv.stop(0)


@pytest.fixture
async def channel(server: GrpcServer) -> AsyncIterator[aio.Channel]:
    async with aio.insecure_channel(server.address) as ch:
        yield ch


async def test_health_reports_serving_overall_and_per_service(channel: aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    for name in ("", SERVICE):
        reply = await stub.Check(health_pb2.HealthCheckRequest(service=name))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(aio.AioRpcError) as caught:
        await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


async def test_stop_turns_health_not_serving_before_the_server_goes(server: GrpcServer) -> None:
    async with aio.insecure_channel(server.address) as ch:
        watch = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=SERVICE))
        first = await watch.read()
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        await server.stop(1.0)
        second = await watch.read()
        assert second.status == health_pb2.HealthCheckResponse.NOT_SERVING


async def test_reflection_lists_the_services(channel: aio.Channel) -> None:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    names: set[str] = set()
    async for reply in stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    ):
        names.update(s.name for s in reply.list_services_response.service)
    assert {SERVICE, "grpc.health.v1.Health"} <= names


async def test_request_id_is_echoed_and_logged(channel: aio.Channel) -> None:
    stream = io.StringIO()
    handler = configure_logging(ServiceSettings(service_name="probe"), stream=stream)
    try:
        rpc = call(channel, "Echo")(b"hello", metadata=(("x-request-id", "req-42"),))
        reply = await rpc
    finally:
        logging.getLogger().removeHandler(handler)
    assert reply == b"hello"
    assert trailers(await rpc.trailing_metadata())["x-request-id"] == "req-42"
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    handled = [entry for entry in lines if entry["msg"] == "echo handled"]
    assert handled, lines
    assert handled[0]["request_id"] == "req-42"
    assert handled[0]["service"] == "probe"
    assert handled[0]["size_bytes"] == 5


@pytest.mark.parametrize("supplied", [None, "bad id with spaces", "x" * 200])
async def test_request_id_is_generated_when_missing_or_unsafe(
    channel: aio.Channel, supplied: str | None
) -> None:
    metadata = (("x-request-id", supplied),) if supplied else ()
    rpc = call(channel, "Echo")(b"x", metadata=metadata)
    await rpc
    echoed = trailers(await rpc.trailing_metadata())["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", echoed)


@pytest.mark.parametrize("trigger", sorted(ERRORS))
async def test_service_errors_map_to_their_status_code(
    channel: aio.Channel, trigger: bytes
) -> None:
    expected = ERRORS[trigger]
    assert isinstance(expected, errors.ServiceError)
    with pytest.raises(aio.AioRpcError) as caught:
        await call(channel, "Fail")(trigger, metadata=(("x-request-id", "req-err"),))
    assert caught.value.code() == expected.status_code
    assert caught.value.details() == expected.message
    # the request id survives an error
    assert trailers(caught.value.trailing_metadata())["x-request-id"] == "req-err"


async def test_invalid_argument_carries_field_violations(channel: aio.Channel) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await call(channel, "Fail")(b"invalid")
    # the standard rich-status trailer, as grpc_status.rpc_status.from_call reads it
    status = status_pb2.Status.FromString(
        trailers(caught.value.trailing_metadata())["grpc-status-details-bin"]
    )
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert status.message == "bolus out of range"
    bad_request = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad_request)
    assert [(v.field, v.description) for v in bad_request.field_violations] == [
        ("insulin_u", "must be at most 25 U")
    ]


async def test_unexpected_error_is_internal_without_internals(
    channel: aio.Channel, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR), pytest.raises(aio.AioRpcError) as caught:
        await call(channel, "Fail")(b"boom", metadata=(("x-request-id", "req-boom"),))
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    details = str(caught.value.details())
    assert "hunter2" not in details
    assert "postgresql" not in details
    assert "req-boom" in details
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert logged
    assert logged[0].exc_info is not None
    assert "hunter2" in str(logged[0].exc_info[1])


async def test_servicer_abort_passes_through_unchanged(channel: aio.Channel) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await call(channel, "Fail")(b"abort")
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert caught.value.details() == "servicer chose this"


async def test_error_after_streamed_items_keeps_items_and_maps_code(channel: aio.Channel) -> None:
    stream = channel.unary_stream(f"/{SERVICE}/Countdown", _identity, _identity)(b"3")
    received: list[bytes] = []

    async def collect() -> None:
        async for item in stream:
            received.append(item)

    with pytest.raises(aio.AioRpcError) as caught:
        await collect()
    assert received == [b"0", b"1", b"2"]
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_unknown_method_is_unimplemented(channel: aio.Channel) -> None:
    with pytest.raises(aio.AioRpcError) as caught:
        await call(channel, "NoSuchMethod")(b"")
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def _handled(method: str, code: str) -> float:
    value = REGISTRY.get_sample_value(
        "grpc_server_handled_total",
        {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": "unary", "grpc_code": code},
    )
    return value or 0.0


async def test_metrics_count_calls_by_method_and_code(channel: aio.Channel) -> None:
    ok_before, nf_before = _handled("Echo", "OK"), _handled("Fail", "NOT_FOUND")
    for _ in range(3):
        await call(channel, "Echo")(b"x")
    with pytest.raises(aio.AioRpcError):
        await call(channel, "Fail")(b"not-found")
    assert _handled("Echo", "OK") - ok_before == 3
    assert _handled("Fail", "NOT_FOUND") - nf_before == 1

    metrics = start_metrics_server(ServiceSettings(metrics_port=0))
    try:
        page = await asyncio.to_thread(fetch, metrics.url)
    finally:
        metrics.stop()
    assert (
        f'grpc_server_handled_total{{grpc_code="NOT_FOUND",grpc_method="Fail",'
        f'grpc_service="{SERVICE}",grpc_type="unary"}}' in page
    )
    assert "grpc_server_handling_seconds_bucket" in page


async def test_auth_hook_guards_methods_but_not_health() -> None:
    hook = require_service_token({token_digest("s3cret-token"): "gateway"})
    srv = build_server(ServiceSettings(service_name="probe"), [probe_service()], auth_hook=hook)
    await srv.start()
    try:
        async with aio.insecure_channel(srv.address) as ch:
            health = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest())
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            for metadata in [(), (("authorization", "Bearer wrong"),)]:
                with pytest.raises(aio.AioRpcError) as caught:
                    await call(ch, "WhoAmI")(b"", metadata=metadata)
                assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            reply = await call(ch, "WhoAmI")(
                b"", metadata=(("authorization", "Bearer s3cret-token"),)
            )
            assert reply == b"gateway"
    finally:
        await srv.stop(0)


async def test_second_server_cannot_take_a_port_in_use(server: GrpcServer) -> None:
    settings = ServiceSettings(service_name="probe", grpc_port=server.port)
    with pytest.raises(RuntimeError):
        build_server(settings, [probe_service()])
