"""Service lifecycle: SIGTERM drains in-flight calls and exits cleanly; a dead worker stops
the whole service instead of leaving it half alive."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import textwrap
import time
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.grpc_server import GrpcServer, generic_service, run_service
from services.runtime.settings import REPO_ROOT, ServiceSettings

SERVICE = "langerhans.test.v1.Probe"

# A whole service process: JSON logs, a slow method, metrics, serve until SIGTERM.
SERVICE_PROCESS = textwrap.dedent(
    f"""
    import asyncio, sys
    import grpc
    from services.runtime.grpc_server import generic_service, run_service
    from services.runtime.logging import configure_logging
    from services.runtime.settings import ServiceSettings

    async def slow(request, context):
        await asyncio.sleep(float(request))
        return b"done"

    def ident(data):
        return data

    settings = ServiceSettings(service_name="probe")
    configure_logging(settings)
    service = generic_service(
        "{SERVICE}", {{"Slow": grpc.unary_unary_rpc_method_handler(slow, ident, ident)}}
    )
    asyncio.run(run_service(
        settings, [service], metrics=True,
        on_started=lambda server: print(server.port, flush=True),
    ))
    """
)


def _ident(data: bytes) -> bytes:
    return data


async def _read_port(proc: asyncio.subprocess.Process) -> int:
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=30)
    return int(line)


@pytest.mark.slow
async def test_sigterm_finishes_in_flight_calls_then_exits_zero() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVICE_PROCESS,
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "LANGERHANS_GRPC_SHUTDOWN_GRACE_S": "5"},
    )
    try:
        port = await _read_port(proc)
        async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=SERVICE), timeout=5
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            in_flight = asyncio.ensure_future(
                channel.unary_unary(f"/{SERVICE}/Slow", _ident, _ident)(b"1.0", timeout=10)
            )
            await asyncio.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            assert await in_flight == b"done"
        return_code = await asyncio.wait_for(proc.wait(), timeout=10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert return_code == 0
    assert proc.stderr is not None
    log = [json.loads(line) for line in (await proc.stderr.read()).decode().splitlines()]
    messages = [entry["msg"] for entry in log]
    assert any(m.startswith("gRPC serving on") for m in messages)
    assert any(m.startswith("metrics on") for m in messages)
    assert any(m.startswith("gRPC stopping") for m in messages)


async def _status(port: int) -> Any:
    async with aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        return await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=2
        )


async def test_stop_event_stops_workers_and_server() -> None:
    stop = asyncio.Event()
    started: list[GrpcServer] = []
    up = asyncio.Event()
    worker_saw_stop = asyncio.Event()

    async def consumer(should_stop: asyncio.Event) -> None:
        await should_stop.wait()
        worker_saw_stop.set()

    def on_started(server: GrpcServer) -> None:
        started.append(server)
        up.set()

    service = generic_service(SERVICE, {})
    task = asyncio.create_task(
        run_service(
            ServiceSettings(), [service], workers=[consumer], stop=stop, on_started=on_started
        )
    )
    await asyncio.wait_for(up.wait(), timeout=10)
    reply = await _status(started[0].port)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    stop.set()
    await asyncio.wait_for(task, timeout=10)
    assert worker_saw_stop.is_set()
    with pytest.raises(aio.AioRpcError) as caught:
        await _status(started[0].port)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_failing_worker_stops_the_service_and_surfaces_the_error() -> None:
    started: list[GrpcServer] = []
    up = asyncio.Event()

    def on_started(server: GrpcServer) -> None:
        started.append(server)
        up.set()

    async def broken_consumer(should_stop: asyncio.Event) -> None:
        await up.wait()
        raise ConnectionError("broker gone")

    began = time.monotonic()
    with pytest.raises(ConnectionError, match="broker gone"):
        await asyncio.wait_for(
            run_service(
                ServiceSettings(),
                [generic_service(SERVICE, {})],
                workers=[broken_consumer],
                on_started=on_started,
            ),
            timeout=10,
        )
    assert time.monotonic() - began < 10
    with pytest.raises(aio.AioRpcError):
        await _status(started[0].port)
