"""Partner API (/partner/v1, partner tokens with scopes) and app registration for developers."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status
from pydantic import AwareDatetime

from gateway.deps import CurrentUser, RuntimeDep, SessionDep, end_read_transaction
from gateway.errors import InvalidRequest
from gateway.partner import oauth_service, service
from gateway.partner.deps import PartnerCaller, partner_scope
from gateway.partner.schemas import (
    AppIn,
    AppOut,
    DevicesOut,
    EgvsOut,
    EventsOut,
    WebhookIn,
    WebhookOut,
)

__all__ = ["developer_router", "partner_router"]

developer_router = APIRouter(prefix="/api/v1/developer", tags=["developer apps"])
partner_router = APIRouter(prefix="/partner/v1", tags=["partner API"])

# Scopes declared next to the endpoints that need them.
GlucoseReader = Annotated[PartnerCaller, Depends(partner_scope("glucose.read"))]
EventsReader = Annotated[PartnerCaller, Depends(partner_scope("events.read"))]
DevicesReader = Annotated[PartnerCaller, Depends(partner_scope("devices.read"))]
AnyPartner = Annotated[PartnerCaller, Depends(partner_scope(None))]
MAX_RANGE = timedelta(days=30)


def _range(
    runtime: RuntimeDep,
    startDate: Annotated[AwareDatetime | None, Query()] = None,  # noqa: N803 - Dexcom names
    endDate: Annotated[AwareDatetime | None, Query()] = None,  # noqa: N803
) -> tuple[datetime, datetime]:
    end: datetime = endDate or runtime.clock.now() + timedelta(minutes=5)
    start: datetime = startDate or end - timedelta(hours=24)
    if start >= end or end - start > MAX_RANGE:
        raise InvalidRequest("startDate must precede endDate by at most 30 days")
    return start, end


Range = Annotated[tuple[datetime, datetime], Depends(_range)]
Limit = Annotated[int, Query(ge=1, le=10_000)]


@developer_router.post("/apps", status_code=status.HTTP_201_CREATED)
def register_app(
    data: AppIn, caller: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> AppOut:
    """Register a public OAuth2 client (PKCE S256, exact redirect URIs)."""
    client = oauth_service.register_app(
        session, runtime, caller.account_id, data.name, data.redirect_uris
    )
    return AppOut(
        client_id=client.client_id,
        name=client.name,
        redirect_uris=client.redirect_uris,
        rate_limit_per_min=runtime.settings.partner_rate_limit_per_min,
    )


@partner_router.get("/egvs")
def egvs(
    caller: GlucoseReader,
    runtime: RuntimeDep,
    session: SessionDep,
    window: Range,
    limit: Limit = 2016,
) -> EgvsOut:
    end_read_transaction(session)
    return service.egvs(runtime.glucose, caller, window[0], window[1], limit)


@partner_router.get("/events")
def events(
    caller: EventsReader, session: SessionDep, window: Range, limit: Limit = 1000
) -> EventsOut:
    return service.events(session, caller, window[0], window[1], limit)


@partner_router.get("/devices")
def devices(caller: DevicesReader, session: SessionDep) -> DevicesOut:
    return service.devices(session, caller)


@partner_router.post("/webhooks", status_code=status.HTTP_201_CREATED)
def create_webhook(
    data: WebhookIn, caller: AnyPartner, session: SessionDep, runtime: RuntimeDep
) -> WebhookOut:
    """Subscribe; deliveries carry `X-Langerhans-Signature: sha256=<HMAC of the body>`."""
    return service.create_webhook(session, runtime.clock, caller, data)


@partner_router.get("/webhooks")
def list_webhooks(caller: AnyPartner, session: SessionDep) -> list[WebhookOut]:
    return service.list_webhooks(session, caller)


@partner_router.delete("/webhooks/{webhook_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_webhook(
    webhook_id: Annotated[str, Path(max_length=36)],
    caller: AnyPartner,
    session: SessionDep,
    runtime: RuntimeDep,
) -> None:
    service.delete_webhook(session, runtime.clock, caller, webhook_id)
