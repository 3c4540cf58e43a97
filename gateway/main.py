"""`langerhans serve gateway`: migrate the gateway's schema and run it under uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from gateway.app import create_app
from gateway.db import make_engine, migrate
from gateway.settings import GatewaySettings
from services.runtime.logging import configure_logging

__all__ = ["serve"]

log = logging.getLogger(__name__)


def serve() -> int:
    settings = GatewaySettings()
    configure_logging(settings)
    migrate(settings.database_url)
    engine = make_engine(settings.database_url)
    app = create_app(settings, settings.clock(), engine=engine)
    log.info("gateway listening", extra={"host": settings.http_host, "port": settings.http_port})
    # uvicorn handles SIGINT/SIGTERM itself and drains in-flight requests before exiting.
    uvicorn.run(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )
    return 0
