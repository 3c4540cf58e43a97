"""gRPC server bootstrap (grpc.aio) shared by every service.

    services = [servicer(FULL_NAME, add_XServicer_to_server, XServicer(...))]
    await serve_grpc(settings, services, auth_hook=...)        # until SIGTERM/SIGINT

`build_server` registers the stock health service (overall "" and each service SERVING once
started, NOT_SERVING from the moment shutdown begins), server reflection, the interceptor
chain of `services.runtime.interceptors`, and binds with TLS or mutual TLS when the settings
name certificate files. `run_service` is the whole start-up of a deployable: migrations,
metrics endpoint, background workers (Kafka consumers) and the gRPC server under one stop
event, failing fast if any worker dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from services.runtime.interceptors import default_interceptors, unprotected_methods
from services.runtime.metrics import start_metrics_server
from services.runtime.security import AuthHook, server_credentials
from services.runtime.settings import ServiceSettings

__all__ = [
    "GrpcServer",
    "ServiceDefinition",
    "Worker",
    "build_server",
    "generic_service",
    "install_stop_signals",
    "run_service",
    "serve_grpc",
    "servicer",
]

logger = logging.getLogger(__name__)

HEALTH_SERVICE_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass(frozen=True)
class ServiceDefinition:
    """One gRPC service to expose: its full proto name and how to add it to a server."""

    full_name: str
    register: Callable[[aio.Server], None]


def servicer(
    full_name: str, add_to_server: Callable[[Any, Any], None], implementation: object
) -> ServiceDefinition:
    """From generated code: `servicer(NAME, pb2_grpc.add_FooServicer_to_server, FooServicer())`.

    `NAME` is `foo_pb2.DESCRIPTOR.services_by_name["Foo"].full_name`.
    """
    return ServiceDefinition(full_name, lambda server: add_to_server(implementation, server))


def generic_service(
    full_name: str, method_handlers: Mapping[str, grpc.RpcMethodHandler[Any, Any]]
) -> ServiceDefinition:
    """A service from hand-built method handlers (`grpc.unary_unary_rpc_method_handler` …)."""
    handler = grpc.method_handlers_generic_handler(full_name, dict(method_handlers))
    return ServiceDefinition(full_name, lambda server: server.add_generic_rpc_handlers((handler,)))


@dataclass
class GrpcServer:
    """A built server: call `start()`, later `stop()`."""

    server: aio.Server
    health: HealthServicer
    service_names: tuple[str, ...]
    host: str
    port: int
    tls: bool
    grace_s: float
    # Plain-text server carrying only the health service, for kubelet's native gRPC probes
    # (which cannot speak TLS); None when no health port is configured.
    health_server: aio.Server | None = None
    _stopped: bool = field(default=False, init=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def start(self) -> None:
        await self.server.start()
        if self.health_server is not None:
            await self.health_server.start()
        for name in ("", *self.service_names):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        logger.info(
            "gRPC serving on %s",
            self.address,
            extra={"grpc_port": self.port, "tls": self.tls, "services": list(self.service_names)},
        )

    async def stop(self, grace_s: float | None = None) -> None:
        """NOT_SERVING first (load balancers stop sending), then drain in-flight calls."""
        if self._stopped:
            return
        self._stopped = True
        await self.health.enter_graceful_shutdown()
        grace = self.grace_s if grace_s is None else grace_s
        logger.info("gRPC stopping (grace %.1f s)", grace)
        await self.server.stop(grace)
        if self.health_server is not None:
            await self.health_server.stop(0)

    async def wait_for_termination(self) -> None:
        await self.server.wait_for_termination()


def build_server(
    settings: ServiceSettings,
    services: Sequence[ServiceDefinition],
    *,
    auth_hook: AuthHook | None = None,
    auth_exempt: Callable[[str], bool] = unprotected_methods,
    auth_only: Collection[str] | None = None,
    extra_interceptors: Sequence[Any] = (),
    options: Sequence[tuple[str, Any]] = (),
) -> GrpcServer:
    """Build (not start) the server for `services` on `settings.grpc_host:grpc_port`.

    `auth_hook` runs for every method except health and reflection (or only for the full
    method names in `auth_only`). Must be called inside a running event loop.
    """
    interceptors = [
        *default_interceptors(auth_hook, auth_exempt=auth_exempt, auth_only=auth_only),
        *extra_interceptors,
    ]
    server = aio.server(
        interceptors=interceptors,
        # Without this a second process could bind the same port and silently share calls.
        options=[("grpc.so_reuseport", 0), *options],
    )
    for service in services:
        service.register(server)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = tuple(service.full_name for service in services)
    reflection.enable_server_reflection(
        (*names, HEALTH_SERVICE_NAME, reflection.SERVICE_NAME), server
    )
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    credentials = server_credentials(settings)
    if credentials is None:
        port = server.add_insecure_port(address)
    else:
        port = server.add_secure_port(address, credentials)
    if port == 0:
        raise RuntimeError(f"could not bind gRPC server to {address}")
    health_server = None
    if settings.grpc_health_port is not None:
        health_server = aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(health, health_server)
        health_address = f"{settings.grpc_host}:{settings.grpc_health_port}"
        if health_server.add_insecure_port(health_address) == 0:
            raise RuntimeError(f"could not bind gRPC health port {health_address}")
    return GrpcServer(
        server=server,
        health=health,
        service_names=names,
        host=settings.grpc_host,
        port=port,
        tls=credentials is not None,
        grace_s=settings.grpc_shutdown_grace_s,
        health_server=health_server,
    )


def install_stop_signals(stop: asyncio.Event) -> Callable[[], None]:
    """Set `stop` on SIGTERM/SIGINT; returns a function that removes the handlers."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        # Only possible in the main thread; elsewhere (tests) the caller sets `stop` itself.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return remove


async def serve_grpc(
    settings: ServiceSettings,
    services: Sequence[ServiceDefinition],
    *,
    auth_hook: AuthHook | None = None,
    stop: asyncio.Event | None = None,
    on_started: Callable[[GrpcServer], None] | None = None,
) -> None:
    """Run a gRPC server until `stop` is set or SIGTERM/SIGINT arrives, then stop gracefully."""
    await run_service(settings, services, auth_hook=auth_hook, stop=stop, on_started=on_started)


Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]
"""A background task (e.g. a Kafka consumer loop) that returns once the event is set."""


async def run_service(
    settings: ServiceSettings,
    services: Sequence[ServiceDefinition],
    *,
    auth_hook: AuthHook | None = None,
    workers: Sequence[Worker] = (),
    metrics: bool = False,
    stop: asyncio.Event | None = None,
    on_started: Callable[[GrpcServer], None] | None = None,
) -> None:
    """Run workers and the gRPC server (and `/metrics` if `metrics`) until stopped.

    Stop order on SIGTERM/SIGINT or `stop`: health NOT_SERVING, workers told to finish (they
    commit what they handled), gRPC drained with the grace period, metrics endpoint closed.
    If a worker fails, the whole service stops and the error propagates (so the supervisor or
    Kubernetes restarts it) — a half-alive service must not report SERVING.
    """
    stop = stop if stop is not None else asyncio.Event()
    remove_signals = install_stop_signals(stop)
    metrics_server = start_metrics_server(settings) if metrics else None
    grpc_server = build_server(settings, services, auth_hook=auth_hook)
    worker_tasks = [
        asyncio.create_task(worker(stop), name=f"worker-{i}") for i, worker in enumerate(workers)
    ]
    failure: BaseException | None = None
    try:
        await grpc_server.start()
        if on_started is not None:
            on_started(grpc_server)
        stop_task = asyncio.create_task(stop.wait(), name="stop")
        done, _ = await asyncio.wait(
            {stop_task, *worker_tasks}, return_when=asyncio.FIRST_COMPLETED
        )
        for task in done:
            if task is stop_task or failure is not None:
                continue
            error = task.exception()
            if error is None and stop.is_set():
                continue  # finished because it was told to
            # A worker returning before stop is as bad as one crashing: its topic is unread.
            failure = error or RuntimeError(
                f"{task.get_name()} ended before the service was stopped"
            )
            logger.error("%s failed; stopping the service", task.get_name(), exc_info=failure)
        stop.set()
        stop_task.cancel()
    finally:
        await grpc_server.health.enter_graceful_shutdown()
        stop.set()
        if worker_tasks:
            results = await asyncio.gather(*worker_tasks, return_exceptions=True)
            for result in results:
                if (
                    isinstance(result, BaseException)
                    and failure is None
                    and not isinstance(result, asyncio.CancelledError)
                ):
                    failure = result
        await grpc_server.stop()
        if metrics_server is not None:
            metrics_server.stop()
        remove_signals()
    if failure is not None:
        raise failure
