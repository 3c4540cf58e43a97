"""Prometheus metrics: the standard gRPC server metrics and the `/metrics` endpoint.

Metric objects live in the process-wide default registry, so metrics declared by any module
(Kafka consumer lag, dosing decisions, …) appear on the same `/metrics` page. Names follow
the usual gRPC server convention (`grpc_server_handled_total{grpc_code=…}` etc.).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

from prometheus_client import Counter, Histogram, start_http_server

from services.runtime.settings import ServiceSettings

__all__ = [
    "GRPC_HANDLED",
    "GRPC_HANDLING_SECONDS",
    "GRPC_STARTED",
    "MetricsServer",
    "start_metrics_server",
]

logger = logging.getLogger(__name__)

_LABELS = ("grpc_service", "grpc_method", "grpc_type")

GRPC_STARTED = Counter("grpc_server_started", "RPCs started on the server.", _LABELS)
GRPC_HANDLED = Counter(
    "grpc_server_handled", "RPCs completed on the server, by status code.", (*_LABELS, "grpc_code")
)
GRPC_HANDLING_SECONDS = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end (response or error).",
    _LABELS,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)


@dataclass
class MetricsServer:
    """A running `/metrics` HTTP endpoint (in a daemon thread, off the event loop)."""

    host: str
    port: int
    _httpd: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(settings: ServiceSettings) -> MetricsServer:
    """Serve `/metrics` on `settings.metrics_host:metrics_port` (port 0 picks a free one)."""
    httpd, thread = start_http_server(settings.metrics_port, addr=settings.metrics_host)
    port = int(httpd.server_address[1])
    server = MetricsServer(settings.metrics_host, port, httpd, thread)
    logger.info("metrics on %s", server.url, extra={"metrics_port": port})
    return server
