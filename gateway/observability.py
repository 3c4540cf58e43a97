"""Request ids, one JSON log line per request, Prometheus metrics, health probes.

The metrics are served on a port of their own (`LANGERHANS_METRICS_HOST`/`_PORT`, as every
gRPC service does; 9090 in the chart), never on the public HTTP port: the Ingress routes that
port to the internet and the metrics name routes, volumes and timings nobody outside needs.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from sqlalchemy import text
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.deps import RuntimeDep
from services.runtime.logging import request_id_var
from services.runtime.metrics import MetricsServer
from services.runtime.settings import ServiceSettings

__all__ = ["HttpMetrics", "RequestContextMiddleware", "health_router", "start_metrics_server"]

log = logging.getLogger("gateway.access")
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class HttpMetrics:
    """Per-app registry, so several apps in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "gateway_http_requests_total",
            "HTTP requests by route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "gateway_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=self.registry,
        )
        # Labelled children by label values: `labels()` validates and locks on every call,
        # ~10 us per request on the hot path; a route/status pair is looked up once.
        self._counted: dict[tuple[str, str, str], Any] = {}
        self._timed: dict[tuple[str, str], Any] = {}

    def observe(self, method: str, route: str, status: str, elapsed_s: float) -> None:
        """Count one request and record its latency."""
        counter = self._counted.get((method, route, status))
        if counter is None:
            counter = self._counted[(method, route, status)] = self.requests.labels(
                method, route, status
            )
        timer = self._timed.get((method, route))
        if timer is None:
            timer = self._timed[(method, route)] = self.latency.labels(method, route)
        counter.inc()
        timer.observe(elapsed_s)


def _route_template(scope: Scope) -> str:
    """The matched route's template; never the raw path (ids must not become metric labels)."""
    route = scope.get("route")
    for attribute in ("path_format", "path"):
        value = getattr(route, attribute, None)
        if isinstance(value, str):
            return value
    return "unmatched"


class RequestContextMiddleware:
    """Pure ASGI: request id in a contextvar and the X-Request-ID header; metrics; access log."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers", []))
        incoming = headers.get(b"x-request-id", b"").decode("latin-1")
        request_id = incoming if _VALID_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status_code = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status_code
            if message["type"] == "http.response.start":
                status_code = int(message["status"])
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        received_bytes = 0

        async def limited_receive() -> Message:
            # Bodies sent without Content-Length are counted as they arrive; past the limit
            # the request is treated as disconnected and nothing is handled.
            nonlocal received_bytes
            message = await receive()
            if message["type"] == "http.request":
                received_bytes += len(message.get("body", b""))
                if received_bytes > self.max_body_bytes:
                    return {"type": "http.disconnect"}
            return message

        declared = headers.get(b"content-length", b"0")
        try:
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                response = JSONResponse(
                    {"error": {"code": "too_large", "message": "request body too large"}},
                    status_code=413,
                )
                await response(scope, receive, send_with_id)
            else:
                await self.app(scope, limited_receive, send_with_id)
        finally:
            elapsed_s = time.perf_counter() - started
            route = _route_template(scope)
            method = str(scope.get("method", "?"))
            self.metrics.observe(method, route, str(status_code), elapsed_s)
            if log.isEnabledFor(logging.INFO):
                log.info(
                    "request",
                    extra={
                        "method": method,
                        "route": route,
                        "status": status_code,
                        "duration_ms": round(elapsed_s * 1000, 2),
                    },
                )
            request_id_var.reset(token)


health_router = APIRouter(tags=["operations"])


@health_router.get("/healthz", include_in_schema=False)
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health_router.get("/readyz", include_in_schema=False)
def readyz(runtime: RuntimeDep) -> Response:
    try:
        with runtime.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception:
        log.warning("readiness check failed: database unreachable", exc_info=True)
        return JSONResponse({"status": "unavailable", "database": "down"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "up"})


def start_metrics_server(settings: ServiceSettings, registry: CollectorRegistry) -> MetricsServer:
    """Serve `registry` at `/metrics` on `settings.metrics_host:metrics_port` (0 picks a free
    port), in a daemon thread off the event loop."""
    httpd, thread = start_http_server(
        settings.metrics_port, addr=settings.metrics_host, registry=registry
    )
    server = MetricsServer(settings.metrics_host, int(httpd.server_address[1]), httpd, thread)
    log.info("metrics on %s", server.url, extra={"metrics_port": server.port})
    return server
