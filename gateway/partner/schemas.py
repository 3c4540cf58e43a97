"""Partner API wire shapes (Dexcom-v3-like records) and developer app registration."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl

__all__ = [
    "AppIn",
    "AppOut",
    "DevicesOut",
    "EgvRecord",
    "EgvsOut",
    "EventRecord",
    "EventsOut",
    "TokenOut",
    "WebhookIn",
    "WebhookOut",
]


class AppIn(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    name: str = Field(min_length=1, max_length=100)
    redirect_uris: list[str] = Field(min_length=1, max_length=10)


class AppOut(BaseModel):
    client_id: str
    name: str
    redirect_uris: list[str]
    rate_limit_per_min: int


class TokenOut(BaseModel):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105 - a type name
    expires_in: int
    refresh_token: str
    scope: str


class EgvRecord(BaseModel):
    recordId: str  # noqa: N815 - Dexcom v3 field names
    systemTime: datetime  # noqa: N815
    displayTime: datetime  # noqa: N815
    transmitterId: str | None = None  # noqa: N815
    value: int
    status: str | None = None
    trend: str
    trendRate: float | None  # noqa: N815
    unit: Literal["mg/dL"] = "mg/dL"
    rateUnit: Literal["mg/dL/min"] = "mg/dL/min"  # noqa: N815
    displayDevice: str | None = None  # noqa: N815


class EgvsOut(BaseModel):
    recordType: Literal["egv"] = "egv"  # noqa: N815
    recordVersion: Literal["3.0"] = "3.0"  # noqa: N815
    userId: str  # noqa: N815
    records: list[EgvRecord]


class EventRecord(BaseModel):
    recordId: str  # noqa: N815
    systemTime: datetime  # noqa: N815
    displayTime: datetime  # noqa: N815
    eventType: Literal["carbs", "insulin"]  # noqa: N815
    eventSubType: str | None = None  # noqa: N815
    value: float
    unit: Literal["grams", "units"]


class EventsOut(BaseModel):
    recordType: Literal["event"] = "event"  # noqa: N815
    recordVersion: Literal["3.0"] = "3.0"  # noqa: N815
    userId: str  # noqa: N815
    records: list[EventRecord]


class DeviceRecord(BaseModel):
    deviceId: str  # noqa: N815
    kind: str
    name: str
    lastUploadDate: datetime | None = None  # noqa: N815


class DevicesOut(BaseModel):
    recordType: Literal["device"] = "device"  # noqa: N815
    recordVersion: Literal["3.0"] = "3.0"  # noqa: N815
    userId: str  # noqa: N815
    records: list[DeviceRecord]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: HttpUrl
    events: list[str] = Field(min_length=1, max_length=10)


class WebhookOut(BaseModel):
    webhook_id: str
    url: str
    events: list[str]
    created_at: datetime
    secret: str | None = Field(
        default=None, description="HMAC-SHA256 key for the X-Langerhans-Signature header; once"
    )
