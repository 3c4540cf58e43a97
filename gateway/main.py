"""`langerhans serve gateway`: migrate the gateway's schema and run it under uvicorn."""

from __future__ import annotations

import logging

import uvicorn
from sqlalchemy import Engine

from gateway.app import create_app
from gateway.db import make_engine, make_session_factory, migrate
from gateway.observability import start_metrics_server
from gateway.security.passwords import Passwords
from gateway.settings import GatewaySettings
from gateway.therapy.events import OutboxPublisher
from services.runtime.clock import Clock
from services.runtime.logging import configure_logging

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve() -> int:
    settings = GatewaySettings()
    configure_logging(settings)
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    clock = settings.clock()
    if settings.demo:
        _seed_demo(settings, engine, clock)
    app = create_app(settings, clock, engine=engine)
    # /metrics on its own port, not the public one the Ingress exposes.
    metrics = start_metrics_server(settings, app.state.metrics.registry)
    # therapy settings versions leave through the outbox to therapy.settings.v1
    publisher = OutboxPublisher(
        settings.kafka_bootstrap_servers, make_session_factory(engine), clock
    )
    publisher.start()
    log.info("gateway listening", extra={"host": settings.http_host, "port": settings.http_port})
    # uvicorn handles SIGINT/SIGTERM itself and drains in-flight requests before exiting.
    # One process per pod (scale out with replicas; the metrics port is per process). uvloop
    # and httptools as bench-api measures; no per-message deflate: a stream frame is serialised
    # once per event and deflate would compress it again for every follower.
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        loop="uvloop",
        http="httptools",
        ws_per_message_deflate=False,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    publisher.stop()
    metrics.stop()
    return 0


def _seed_demo(settings: GatewaySettings, engine: Engine, clock: Clock) -> None:
    from gateway.demo import fleet_demo_people, seed_demo

    if settings.demo_password is None:
        raise SystemExit("LANGERHANS_DEMO needs LANGERHANS_DEMO_PASSWORD")
    seed_demo(
        make_session_factory(engine),
        clock,
        Passwords(settings.argon2_time_cost, settings.argon2_memory_kib),
        fleet_demo_people(settings.demo_people),
        settings.demo_password.get_secret_value(),
    )
