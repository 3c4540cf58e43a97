"""The plain-text health port answers health checks and nothing else."""

from __future__ import annotations

import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.runtime.grpc_server import build_server
from services.runtime.settings import ServiceSettings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_health_port_serves_health_only() -> None:
    health_port = _free_port()
    settings = ServiceSettings(grpc_port=0, grpc_health_port=health_port)
    server = build_server(settings, [])
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            # Reflection (and every real service) lives only on the main port.
            reflection = channel.unary_unary(
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                request_serializer=None,
                response_deserializer=None,
            )
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await reflection(b"", timeout=5)
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        await server.stop(0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
