"""Partner resources in Dexcom-v3-like shapes, and webhook subscriptions."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime

from sqlalchemy.orm import Session

from gateway.audit.service import record
from gateway.devices.repository import DeviceRepository
from gateway.errors import Forbidden, InvalidRequest, NotFound
from gateway.glucose.source import GlucoseSource
from gateway.models import Webhook
from gateway.partner.deps import PartnerCaller
from gateway.partner.repository import PartnerRepository
from gateway.partner.schemas import (
    DeviceRecord,
    DevicesOut,
    EgvRecord,
    EgvsOut,
    EventRecord,
    EventsOut,
    WebhookIn,
    WebhookOut,
)
from gateway.partner.scopes import WEBHOOK_EVENTS
from gateway.treatments.repository import TreatmentRepository
from services.runtime.clock import Clock

__all__ = [
    "MAX_WEBHOOKS",
    "create_webhook",
    "delete_webhook",
    "devices",
    "egvs",
    "events",
    "list_webhooks",
]

MAX_WEBHOOKS = 10
# Nightscout direction -> Dexcom v3 trend.
_TREND = {
    "DoubleUp": "doubleUp",
    "SingleUp": "singleUp",
    "FortyFiveUp": "fortyFiveUp",
    "Flat": "flat",
    "FortyFiveDown": "fortyFiveDown",
    "SingleDown": "singleDown",
    "DoubleDown": "doubleDown",
    "NOT COMPUTABLE": "notComputable",
    "RATE OUT OF RANGE": "rateOutOfRange",
}


def egvs(
    source: GlucoseSource, caller: PartnerCaller, start: datetime, end: datetime, limit: int
) -> EgvsOut:
    records = [
        EgvRecord(
            recordId=r.record_id,
            systemTime=r.time,
            # Display time is device-local in Dexcom's API; devices here report UTC.
            displayTime=r.time,
            value=r.glucose_mg_dl,
            trend=_TREND.get(r.trend or "", "none"),
            trendRate=r.trend_rate_mg_dl_per_min,
            displayDevice=r.device,
        )
        for r in source.readings(caller.person_id, start, end, limit)
    ]
    return EgvsOut(userId=caller.person_id, records=records)


def events(
    session: Session, caller: PartnerCaller, start: datetime, end: datetime, limit: int
) -> EventsOut:
    out: list[EventRecord] = []
    for t in TreatmentRepository(session).between(caller.person_id, start, end, limit):
        if t.kind == "carbs" and t.carbs_g is not None:
            out.append(
                EventRecord(
                    recordId=t.id,
                    systemTime=t.occurred_at,
                    displayTime=t.occurred_at,
                    eventType="carbs",
                    value=t.carbs_g,
                    unit="grams",
                )
            )
        elif t.insulin_u is not None:
            out.append(
                EventRecord(
                    recordId=t.id,
                    systemTime=t.occurred_at,
                    displayTime=t.occurred_at,
                    eventType="insulin",
                    eventSubType=t.bolus_type,
                    value=t.insulin_u,
                    unit="units",
                )
            )
    return EventsOut(userId=caller.person_id, records=out)


def devices(session: Session, caller: PartnerCaller) -> DevicesOut:
    return DevicesOut(
        userId=caller.person_id,
        records=[
            DeviceRecord(deviceId=d.id, kind=d.kind, name=d.name)
            for d in DeviceRepository(session).for_person(caller.person_id)
            if d.revoked_at is None
        ],
    )


def _out(hook: Webhook, secret: str | None = None) -> WebhookOut:
    return WebhookOut(
        webhook_id=hook.id,
        url=hook.url,
        events=hook.events,
        created_at=hook.created_at,
        secret=secret,
    )


def create_webhook(
    session: Session, clock: Clock, caller: PartnerCaller, data: WebhookIn
) -> WebhookOut:
    for event in data.events:
        needed = WEBHOOK_EVENTS.get(event)
        if needed is None:
            raise InvalidRequest(f"unknown webhook event '{event}'")
        if needed not in caller.scopes:
            raise Forbidden(f"event '{event}' needs the '{needed}' scope")
    if data.url.scheme != "https" and data.url.host not in {"127.0.0.1", "localhost"}:
        raise InvalidRequest("webhook URLs must be https")
    repo = PartnerRepository(session)
    if len(repo.webhooks(caller.client_id, caller.person_id)) >= MAX_WEBHOOKS:
        raise InvalidRequest(f"at most {MAX_WEBHOOKS} webhooks per app and person")
    secret = secrets.token_urlsafe(32)
    hook = Webhook(
        id=str(uuid.uuid4()),
        client_id=caller.client_id,
        account_id=caller.person_id,
        url=str(data.url),
        events=sorted(set(data.events)),
        secret=secret,
        created_at=clock.now(),
    )
    repo.add(hook)
    record(
        session,
        clock,
        action="webhook.created",
        actor_id=caller.client_id,
        person_id=caller.person_id,
        details={"webhook_id": hook.id, "events": hook.events},
    )
    return _out(hook, secret)


def list_webhooks(session: Session, caller: PartnerCaller) -> list[WebhookOut]:
    return [
        _out(h) for h in PartnerRepository(session).webhooks(caller.client_id, caller.person_id)
    ]


def delete_webhook(session: Session, clock: Clock, caller: PartnerCaller, webhook_id: str) -> None:
    repo = PartnerRepository(session)
    hook = repo.webhook(caller.client_id, caller.person_id, webhook_id)
    if hook is None:
        raise NotFound("no such webhook")
    repo.delete(hook)
    record(
        session,
        clock,
        action="webhook.deleted",
        actor_id=caller.client_id,
        person_id=caller.person_id,
        details={"webhook_id": webhook_id},
    )
