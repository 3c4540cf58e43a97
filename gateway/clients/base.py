"""gRPC channels to the backend services and the one place that maps their errors.

- One `grpc.aio` channel per service address and event loop, opened lazily (a TestClient or a
  uvicorn worker each run their own loop; a channel must live on the loop that uses it).
- Every call carries a deadline, `x-request-id` (the HTTP request's id) and, when configured,
  `authorization: Bearer <service token>`; TLS when `grpc_tls_ca_path` is set.
- gRPC status → gateway error: UNAVAILABLE / DEADLINE_EXCEEDED / not configured → 503,
  INVALID_ARGUMENT / OUT_OF_RANGE → 422, FAILED_PRECONDITION / ABORTED / ALREADY_EXISTS → 409,
  NOT_FOUND → 404, PERMISSION_DENIED → 403, RESOURCE_EXHAUSTED → 429, anything else → 503
  (a backend's bug is not the caller's, and never a 500 from the gateway).

Sync endpoints call `run_sync(coro_fn, …)`, which runs the coroutine on the app's event loop
from the worker thread FastAPI put the endpoint on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio.from_thread
import grpc
from grpc import aio

from gateway.errors import (
    AppError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServiceUnavailable,
)
from gateway.settings import GatewaySettings
from services.runtime.logging import current_request_id
from services.runtime.security import channel_credentials

__all__ = ["ServiceChannels", "call_metadata", "map_rpc_error", "run_sync"]

log = logging.getLogger(__name__)
T = TypeVar("T")

SERVICE_LABELS = {
    "dosing-engine": "dosing engine",
    "cgm-ingestion": "glucose service",
    "alerts": "alerts service",
    "device-gateway": "device service",
}


class ServiceChannels:
    """Lazily opened channels, one per (service, event loop)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._settings = settings
        self._addresses = {
            "dosing-engine": settings.dosing_engine_addr,
            "cgm-ingestion": settings.cgm_ingestion_addr,
            "alerts": settings.alerts_addr,
            "device-gateway": settings.device_gateway_addr,
        }
        self._channels: dict[tuple[str, int], aio.Channel] = {}

    @property
    def deadline_s(self) -> float:
        return self._settings.grpc_deadline_s

    def configured(self, service: str) -> bool:
        return bool(self._addresses.get(service))

    def channel(self, service: str) -> aio.Channel:
        """The channel to `service` on the running loop; 503 when it has no address."""
        address = self._addresses.get(service)
        if not address:
            raise ServiceUnavailable(
                f"the {SERVICE_LABELS.get(service, service)} is not configured on this gateway"
            )
        key = (service, id(asyncio.get_running_loop()))
        channel = self._channels.get(key)
        if channel is None:
            options = [("grpc.keepalive_time_ms", 30_000), ("grpc.enable_retries", 1)]
            ca = self._settings.grpc_tls_ca_path
            if ca is not None:
                creds = channel_credentials(
                    ca, self._settings.grpc_tls_cert_path, self._settings.grpc_tls_key_path
                )
                channel = aio.secure_channel(address, creds, options=options)
            else:
                channel = aio.insecure_channel(address, options=options)
            self._channels[key] = channel
        return channel

    def metadata(self, request_id: str | None) -> list[tuple[str, str]]:
        return call_metadata(self._settings, request_id)

    async def close(self) -> None:
        """Close the channels opened on the running loop."""
        loop_id = id(asyncio.get_running_loop())
        for key in [k for k in self._channels if k[1] == loop_id]:
            await self._channels.pop(key).close(None)


def call_metadata(settings: GatewaySettings, request_id: str | None) -> list[tuple[str, str]]:
    metadata: list[tuple[str, str]] = []
    if request_id:
        metadata.append(("x-request-id", request_id))
    if settings.service_token is not None:
        metadata.append(("authorization", f"Bearer {settings.service_token.get_secret_value()}"))
    return metadata


_BY_CODE: dict[grpc.StatusCode, Callable[[str], AppError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: InvalidRequest,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ABORTED: Conflict,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: Forbidden,
    grpc.StatusCode.RESOURCE_EXHAUSTED: lambda m: RateLimited(m, retry_after_s=5),
}


def map_rpc_error(service: str, exc: grpc.RpcError) -> AppError:
    """The gateway error a caller sees for a failed service call."""
    label = SERVICE_LABELS.get(service, service)
    code = exc.code() if isinstance(exc, aio.AioRpcError | grpc.Call) else None
    details = (exc.details() if isinstance(exc, aio.AioRpcError | grpc.Call) else None) or ""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ServiceUnavailable(f"the {label} is unavailable; try again shortly")
    factory = _BY_CODE.get(code) if code is not None else None
    if factory is not None:
        return factory(details or f"the {label} refused the request")
    # UNAUTHENTICATED / INTERNAL / UNKNOWN: our wiring or their bug; logged, never a 500.
    log.warning("service call failed", extra={"service": service, "grpc_code": str(code)})
    return ServiceUnavailable(f"the {label} could not answer; try again shortly")


def run_sync(fn: Callable[..., Coroutine[Any, Any, T]], *args: Any) -> T:
    """Run an async client call from a sync endpoint's worker thread on the app's loop."""
    return anyio.from_thread.run(fn, *args)


def request_id() -> str | None:
    return current_request_id()
