"""The gateway application factory.

Route map (no two APIs share a path):
- `/api/v1/auth/*`, `/api/v1/me`, `/api/v1/people/...`, `/api/v1/invitations/*`,
  `/api/v1/clinics/*`, `/api/v1/developer/*` — the app API (bearer JWT);
- `/api/v1/entries`, `/treatments`, `/devicestatus`, `/profile`, `/status`, `/verifyauth`
  (with or without `.json`) — the Nightscout-compatible API (api-secret / token);
- `/oauth/*` and `/partner/v1/*` — the partner API;
- `/.well-known/jwks.json`, `/healthz`, `/readyz`.

Prometheus metrics are not on this app: `gateway.main` serves them on the metrics port.
"""

from __future__ import annotations

from fastapi import FastAPI

from gateway.accounts.endpoints import router as accounts_router
from gateway.accounts.endpoints import wellknown_router
from gateway.alerts.endpoints import partner_router as partner_alerts_router
from gateway.alerts.endpoints import router as alerts_router
from gateway.clients.base import ServiceChannels
from gateway.clients.glucose_source import CgmServiceSource
from gateway.clients.services import ServiceClients
from gateway.db import make_read_session_factory, make_session_factory
from gateway.devices.endpoints import router as devices_router
from gateway.dosing.endpoints import router as dosing_router
from gateway.errors import install_error_handlers
from gateway.glucose.endpoints import router as glucose_router
from gateway.glucose.source import GlucoseSource, NightscoutEntriesSource
from gateway.nightscout.endpoints import router as nightscout_router
from gateway.nightscout.endpoints import settings_router as nightscout_settings_router
from gateway.observability import HttpMetrics, RequestContextMiddleware, health_router
from gateway.partner.endpoints import developer_router, partner_router
from gateway.partner.oauth_endpoints import router as oauth_router
from gateway.partner.ratelimit import RateLimiter
from gateway.reports.endpoints import router as reports_router
from gateway.runtime import Runtime
from gateway.security.keys import load_key_ring
from gateway.security.passwords import Passwords
from gateway.security.tokens import TokenIssuer
from gateway.settings import GatewaySettings
from gateway.sharing.endpoints import router as sharing_router
from gateway.stream.endpoints import router as stream_router
from gateway.stream.hub import StreamHub
from gateway.stream.lifespan import backend_lifespan
from gateway.therapy.endpoints import router as therapy_router
from gateway.treatments.endpoints import router as treatments_router
from gateway.web.router import router as web_router
from services.runtime.clock import Clock

__all__ = ["create_app"]

from sqlalchemy import Engine


def create_app(
    settings: GatewaySettings,
    clock: Clock,
    *,
    engine: Engine,
    glucose: GlucoseSource | None = None,
) -> FastAPI:
    """Build the app around an already-migrated engine."""
    keys = load_key_ring(settings)
    session_factory = make_session_factory(engine)
    read_session_factory = make_read_session_factory(engine)
    services = ServiceClients(ServiceChannels(settings))
    if glucose is None and settings.cgm_ingestion_addr:
        glucose = CgmServiceSource(services)
    runtime = Runtime(
        settings=settings,
        clock=clock,
        engine=engine,
        session_factory=session_factory,
        read_session_factory=read_session_factory,
        keys=keys,
        tokens=TokenIssuer(keys, settings.issuer, settings.access_token_ttl_s, clock),
        passwords=Passwords(settings.argon2_time_cost, settings.argon2_memory_kib),
        glucose=glucose or NightscoutEntriesSource(read_session_factory),
        rate_limiter=RateLimiter(clock),
    )
    app = FastAPI(
        lifespan=backend_lifespan,
        title="Langerhans gateway",
        version="1.0.0",
        description=(
            "App API (bearer JWT), partner API (OAuth2 code + PKCE) and a "
            "Nightscout-compatible API v1. See docs/gateway.md."
        ),
    )
    app.state.runtime = runtime
    app.state.services = services
    app.state.stream_hub = StreamHub()
    app.state.metrics = HttpMetrics()
    install_error_handlers(app)
    # Routes are matched in this order: the hottest read (every app and follower polls the
    # glucose page) first, so it is not compared against every other router's paths.
    for router in (
        glucose_router,
        health_router,
        wellknown_router,
        accounts_router,
        sharing_router,
        devices_router,
        therapy_router,
        treatments_router,
        dosing_router,
        alerts_router,
        stream_router,
        reports_router,
        nightscout_settings_router,
        developer_router,
        oauth_router,
        partner_router,
        partner_alerts_router,
        nightscout_router,
        web_router,
    ):
        app.include_router(router)
    app.add_middleware(
        RequestContextMiddleware,
        metrics=app.state.metrics,
        max_body_bytes=settings.max_request_bytes,
    )
    return app
